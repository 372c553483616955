"""The admin API: its routes, and its handlers over KeyAdmin (on SQLite and PostgreSQL)."""

from typing import Any

import orjson
import pytest
from starlette.requests import Request

from ai_gateway.api.admin import AdminApi
from ai_gateway.api.record import RequestRecord
from ai_gateway.api.routes import Access, Call
from ai_gateway.db.engine import create_engine, database_url
from ai_gateway.errors import InvalidRequest, MethodNotAllowed, NotFound
from ai_gateway.keys.admin import KeyAdmin
from ai_gateway.keys.records import Change
from ai_gateway.keys.sql import KeyRepository

pytestmark = pytest.mark.anyio

KEY_FIELDS = [
    "id",
    "object",
    "name",
    "team",
    "key_prefix",
    "models",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget",
    "expires_at",
    "disabled",
    "metadata",
    "created_at",
    "updated_at",
    "last_used_at",
]


@pytest.fixture
def api(admin: KeyAdmin) -> AdminApi:
    return AdminApi(admin)


@pytest.fixture
def routes() -> AdminApi:
    """The admin API for route matching only: its database is never opened."""

    async def ignore(_: Change) -> None:
        pass

    engine = create_engine(database_url("sqlite:///unused.db"))
    return AdminApi(KeyAdmin(KeyRepository(engine), ignore))


def call(method: str, path: str, body: bytes, query: str) -> Call:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [],
    }
    return Call(Request(scope), RequestRecord("req_test", method, path), None, body)


async def send(
    api: AdminApi, method: str, path: str, body: object = b"", query: str = ""
) -> tuple[int, Any, dict[str, str]]:
    """Status, JSON body and headers of one request straight to its handler."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await api.match(method, path).handle(call(method, path, raw, query))
    return response.status_code, orjson.loads(response.body), dict(response.headers)


ROUTES = [
    ("POST", "/admin/v1/keys", True),
    ("GET", "/admin/v1/keys", False),
    ("GET", "/admin/v1/keys/key_1", False),
    ("PATCH", "/admin/v1/keys/key_1", True),
    ("DELETE", "/admin/v1/keys/key_1", False),
    ("POST", "/admin/v1/keys/key_1/disable", False),
    ("POST", "/admin/v1/keys/key_1/rotate", True),
    ("POST", "/admin/v1/teams", True),
    ("GET", "/admin/v1/teams/", False),
    ("HEAD", "/admin/v1/teams", False),
    ("GET", "/admin/v1/teams/team_1", False),
    ("PATCH", "/admin/v1/teams/team_1", True),
    ("DELETE", "/admin/v1/teams/team_1", False),
    ("POST", "/admin/v1/teams/team_1/disable", False),
]


@pytest.mark.parametrize(("method", "path", "reads_body"), ROUTES)
def test_every_admin_route_takes_an_admin_key(
    routes: AdminApi, method: str, path: str, reads_body: bool
) -> None:
    endpoint = routes.match(method, path)

    assert (endpoint.access, endpoint.reads_body) == (Access.ADMIN, reads_body)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/",
        "/admin/v1/users",
        "/admin/v1/keys//disable",
        "/admin/v1/keys/key_1/enable",
        "/admin/v1/teams/team_1/rotate",
        "/admin/v1/keys/key_1/disable/now",
    ],
)
def test_an_unknown_admin_path_is_a_404(routes: AdminApi, path: str) -> None:
    with pytest.raises(NotFound, match=r"^Unknown admin route"):
        routes.match("GET", path)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/admin/v1/keys", "GET, HEAD, POST"),
        ("POST", "/admin/v1/keys/key_1", "DELETE, GET, HEAD, PATCH"),
        ("GET", "/admin/v1/keys/key_1/rotate", "POST"),
    ],
)
def test_a_wrong_method_is_a_405_with_allow(
    routes: AdminApi, method: str, path: str, allow: str
) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        routes.match(method, path)

    assert caught.value.headers == {"allow": allow}


async def test_a_created_key_carries_its_secret_once(api: AdminApi) -> None:
    status, created, headers = await send(api, "POST", "/admin/v1/keys", {"name": "ci"})
    _, shown, _ = await send(api, "GET", f"/admin/v1/keys/{created['id']}")

    assert status == 201
    assert headers["cache-control"] == "no-store"
    assert list(created) == [*KEY_FIELDS, "key"]
    assert created["key"].startswith(created["key_prefix"])
    assert shown == {field: created[field] for field in KEY_FIELDS}
    assert shown["object"] == "gateway.key"
    assert isinstance(shown["created_at"], int)


async def test_lists_have_openais_shape(api: AdminApi) -> None:
    ids = [(await send(api, "POST", "/admin/v1/keys", {"name": f"k{n}"}))[1]["id"] for n in "ab"]

    _, first, _ = await send(api, "GET", "/admin/v1/keys", query="limit=1")
    _, rest, _ = await send(api, "GET", "/admin/v1/keys", query=f"limit=1&after={ids[0]}")

    assert {k: v for k, v in first.items() if k != "data"} == {
        "object": "list",
        "first_id": ids[0],
        "last_id": ids[0],
        "has_more": True,
    }
    assert [key["id"] for key in first["data"] + rest["data"]] == ids
    assert rest["has_more"] is False


async def test_teams_are_administered_over_the_api(api: AdminApi) -> None:
    status, team, _ = await send(api, "POST", "/admin/v1/teams", {"name": "eng", "rpm_limit": 9})
    team_path = f"/admin/v1/teams/{team['id']}"
    _, updated, _ = await send(api, "PATCH", team_path, {"metadata": {"o": 1}})
    _, disabled, _ = await send(api, "POST", f"{team_path}/disable")
    _, listed, _ = await send(api, "GET", "/admin/v1/teams")
    _, deleted, _ = await send(api, "DELETE", team_path)

    assert status == 201
    assert list(team) == [
        "id",
        "object",
        "name",
        "rpm_limit",
        "tpm_limit",
        "max_parallel_requests",
        "budget",
        "disabled",
        "metadata",
        "created_at",
        "updated_at",
    ]
    assert (team["object"], team["rpm_limit"], updated["metadata"]) == ("gateway.team", 9, {"o": 1})
    assert disabled["disabled"] is True
    assert [t["id"] for t in listed["data"]] == [team["id"]]
    assert deleted == {"id": team["id"], "object": "gateway.team", "deleted": True}


async def test_keys_are_updated_disabled_rotated_and_deleted(api: AdminApi) -> None:
    _, key, _ = await send(api, "POST", "/admin/v1/keys", {"name": "ci", "rpm_limit": 5})
    path = f"/admin/v1/keys/{key['id']}"

    _, updated, _ = await send(api, "PATCH", path, {"rpm_limit": None, "models": ["m"]})
    _, disabled, _ = await send(api, "POST", f"{path}/disable")
    _, rotated, headers = await send(api, "POST", f"{path}/rotate")
    _, graced, _ = await send(api, "POST", f"{path}/rotate", {"grace_period_s": 60})
    _, deleted, _ = await send(api, "DELETE", path)

    assert (updated["rpm_limit"], updated["models"]) == (None, ["m"])
    assert disabled["disabled"] is True
    assert rotated["key"] not in (key["key"], graced["key"])
    assert headers["cache-control"] == "no-store"
    assert deleted == {"id": key["id"], "object": "gateway.key", "deleted": True}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "We could not parse the JSON body of your request. The body must be a JSON object."),
        (b"", "We could not parse the JSON body of your request. The body must be a JSON object."),
        (b"[]", "The request body must be a JSON object."),
        (b'"ci"', "The request body must be a JSON object."),
    ],
)
async def test_a_body_that_is_no_json_object_is_a_400(
    api: AdminApi, body: bytes, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await send(api, "POST", "/admin/v1/keys", body)

    assert caught.value.status_code == 400
    assert caught.value.message == message


async def test_an_unknown_list_parameter_is_a_400(api: AdminApi) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await send(api, "GET", "/admin/v1/teams", query="order=desc")

    assert caught.value.param == "order"

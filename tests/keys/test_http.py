"""The admin API over HTTP, through the whole app (started, its database opened): keys issued,
changed and removed take effect on the gateway's own routes at once."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.providers.registry import Registry
from tests.conftest import make_settings, started_app
from tests.fakes import GATEWAY_KEY, FakeProvider

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-test"


@pytest.fixture
async def http(url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The started gateway on the migrated database, sending the admin key."""
    settings = make_settings(gateway_admin_keys=ADMIN_KEY, database_url=url)
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider}), key=ADMIN_KEY) as client:
        yield client


async def models_status(http: httpx.AsyncClient, secret: str) -> tuple[int, Any]:
    """What /v1/models answers a caller with this key."""
    response = await http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    return response.status_code, response.json()


def envelope(message: str, *, kind: str = "invalid_request_error", **fields: Any) -> Any:
    return {"error": {"message": message, "type": kind, "param": None, "code": None, **fields}}


async def test_an_issued_key_works_until_it_is_disabled(http: httpx.AsyncClient) -> None:
    created = await http.post("/admin/v1/keys", json={"name": "ci"})
    key = created.json()

    before = await models_status(http, key["key"])
    await http.post(f"/admin/v1/keys/{key['id']}/disable")
    after = await models_status(http, key["key"])

    assert created.status_code == 201
    assert before[0] == 200
    assert after == (
        401,
        envelope(
            "This API key has been disabled.",
            kind="authentication_error",
            code="invalid_api_key",
        ),
    )


async def test_rotation_keeps_the_old_secret_only_for_its_grace(http: httpx.AsyncClient) -> None:
    old = (await http.post("/admin/v1/keys", json={"name": "ci"})).json()
    path = f"/admin/v1/keys/{old['id']}/rotate"

    graced = (await http.post(path, json={"grace_period_s": 300})).json()
    both = [(await models_status(http, s["key"]))[0] for s in (old, graced)]
    final = (await http.post(path)).json()
    after = [(await models_status(http, s["key"]))[0] for s in (old, graced, final)]

    assert both == [200, 200]
    assert after == [401, 401, 200]


async def test_a_deleted_key_and_a_disabled_team_lock_callers_out(
    http: httpx.AsyncClient,
) -> None:
    team = (await http.post("/admin/v1/teams", json={"name": "eng"})).json()
    first = (await http.post("/admin/v1/keys", json={"name": "a", "team": "eng"})).json()
    second = (await http.post("/admin/v1/keys", json={"name": "b"})).json()

    await http.post(f"/admin/v1/teams/{team['id']}/disable")
    deleted = await http.delete(f"/admin/v1/keys/{second['id']}")

    assert await models_status(http, first["key"]) == (
        401,
        envelope(
            "This API key's team has been disabled.",
            kind="authentication_error",
            code="invalid_api_key",
        ),
    )
    assert (await models_status(http, second["key"]))[0] == 401
    assert deleted.json() == {"id": second["id"], "object": "gateway.key", "deleted": True}


@pytest.mark.parametrize("key", [None, GATEWAY_KEY, "sk-gw-unknown"])
async def test_the_admin_api_takes_only_admin_keys(
    http: httpx.AsyncClient, key: str | None
) -> None:
    del http.headers["authorization"]
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    response = await http.get("/admin/v1/keys", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_a_bad_field_is_a_400_envelope(http: httpx.AsyncClient) -> None:
    response = await http.post("/admin/v1/keys", json={"name": "ci", "rpm_limit": 0})

    assert response.status_code == 400
    assert response.json() == envelope(
        "Invalid 'rpm_limit': input should be greater than 0.", param="rpm_limit"
    )


async def test_bad_json_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/admin/v1/teams", content=b"{", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == envelope(
        "We could not parse the JSON body of your request. The body must be a JSON object.",
        code="invalid_json",
    )


async def test_unknown_ids_routes_and_methods(http: httpx.AsyncClient) -> None:
    key = await http.get("/admin/v1/keys/key_nope")
    team = await http.patch("/admin/v1/teams/team_nope", json={"rpm_limit": 1})
    route = await http.get("/admin/v1/users")
    method = await http.put("/admin/v1/keys")

    assert (key.status_code, key.json()) == (
        404,
        envelope("No key with id 'key_nope'.", code="key_not_found"),
    )
    assert (team.status_code, team.json()["error"]["code"]) == (404, "team_not_found")
    assert route.status_code == 404
    assert (method.status_code, method.headers["allow"]) == (405, "GET, HEAD, POST")


async def test_a_team_with_keys_is_not_deleted(http: httpx.AsyncClient) -> None:
    team = (await http.post("/admin/v1/teams", json={"name": "eng"})).json()
    await http.post("/admin/v1/keys", json={"name": "a", "team": team["id"]})
    duplicate = await http.post("/admin/v1/teams", json={"name": "eng"})

    response = await http.delete(f"/admin/v1/teams/{team['id']}")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert (duplicate.status_code, duplicate.json()) == (
        409,
        envelope("A team named 'eng' already exists.", param="name", code="conflict"),
    )

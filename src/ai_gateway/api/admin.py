"""AdminApi: the `/admin/v1/` endpoints for keys and teams, over KeyAdmin, and for usage
reports, over UsageReport."""

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import orjson
import structlog
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import Response

from ai_gateway.api.routes import Access, Call, Endpoint, Handler, json_response, not_allowed
from ai_gateway.config.constants import ADMIN_PREFIX
from ai_gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from ai_gateway.keys.admin import IssuedKey, KeyAdmin
from ai_gateway.keys.payloads import (
    KeyCreate,
    KeyQuery,
    KeyRotate,
    KeyUpdate,
    PageQuery,
    TeamCreate,
    TeamUpdate,
    validated,
)
from ai_gateway.keys.tables import ID_LENGTH
from ai_gateway.keys.views import (
    KEY_OBJECT,
    TEAM_OBJECT,
    deleted_view,
    key_view,
    page_view,
    team_view,
)
from ai_gateway.usage.report import UsageReport, record_query, usage_query

log = structlog.get_logger(__name__)

UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout, OSError)
"""Failures of the database itself (down, unreachable, pool exhausted): a 503."""

ItemHandler = Callable[[str, Call], Awaitable[Response]]
# A secret is in the body: no cache anywhere may keep it.
SECRET_HEADERS: Final = {"cache-control": "no-store"}


def body_of(call: Call, *, is_optional: bool = False) -> dict[str, Any]:
    """The request's JSON object (an optional body may be empty: `{}`)."""
    if not call.body.strip() and is_optional:
        return {}
    try:
        payload = orjson.loads(call.body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return payload


def query_of(call: Call) -> dict[str, str]:
    """The query string's parameters (a repeated one: its last value)."""
    return dict(call.request.query_params)


def created(payload: dict[str, Any], *, is_secret: bool = False) -> Response:
    """A 201 with a JSON body."""
    headers = SECRET_HEADERS if is_secret else None
    return Response(orjson.dumps(payload), 201, headers, media_type="application/json")


def issued(key: IssuedKey, *, is_new: bool) -> Response:
    """A key with its secret (shown this once)."""
    view = key_view(key.record, secret=key.secret)
    return created(view, is_secret=True) if is_new else json_response(view, SECRET_HEADERS)


class UsageHandlers:
    """`GET /admin/v1/usage` and `GET /admin/v1/usage/requests`, over UsageReport."""

    def __init__(self, report: UsageReport) -> None:
        self.report = report

    async def summary(self, call: Call) -> Response:
        """GET /admin/v1/usage?by=&since=&limit=."""
        return json_response(await self.report.summary(usage_query(query_of(call))))

    async def records(self, call: Call) -> Response:
        """GET /admin/v1/usage/requests?since=&limit=&after=&key_id=&team=&model=&status=
        &outcome=."""
        return json_response(await self.report.records(record_query(query_of(call))))


class AdminApi:
    """Method and path under `/admin/v1/` -> endpoint; every endpoint takes an admin key."""

    def __init__(self, admin: KeyAdmin, report: UsageReport | None = None) -> None:
        self.admin = admin
        self.collections: dict[str, dict[str, Endpoint]] = {
            "keys": {
                "POST": self.endpoint(self.create_key, reads_body=True),
                "GET": self.endpoint(self.list_keys),
            },
            "teams": {
                "POST": self.endpoint(self.create_team, reads_body=True),
                "GET": self.endpoint(self.list_teams),
            },
        }
        self.items: dict[tuple[str, str], dict[str, tuple[ItemHandler, bool]]] = {
            ("keys", ""): {
                "GET": (self.show_key, False),
                "PATCH": (self.update_key, True),
                "DELETE": (self.delete_key, False),
            },
            ("keys", "disable"): {"POST": (self.disable_key, False)},
            ("keys", "rotate"): {"POST": (self.rotate_key, True)},
            ("teams", ""): {
                "GET": (self.show_team, False),
                "PATCH": (self.update_team, True),
                "DELETE": (self.delete_team, False),
            },
            ("teams", "disable"): {"POST": (self.disable_team, False)},
        }
        if report is not None:
            usage = UsageHandlers(report)
            self.collections["usage"] = {"GET": self.endpoint(usage.summary)}
            self.collections["usage/requests"] = {"GET": self.endpoint(usage.records)}

    @staticmethod
    def endpoint(handle: Handler, *, reads_body: bool = False) -> Endpoint:
        """An admin endpoint; a database that fails it is a 503, logged, never a 500."""

        async def guarded(call: Call) -> Response:
            try:
                return await handle(call)
            except UNREACHABLE as error:
                log.warning("admin_database_failed", error=type(error).__name__)
                raise ServiceUnavailable(
                    "The key database cannot be reached right now; retry shortly.",
                    code="database_unavailable",
                ) from None
            except SQLAlchemyError as error:  # the database refused a value it was given
                log.info("admin_value_refused", error=type(error).__name__)
                raise InvalidRequest(
                    "The database refused a value of this request (out of range, or a "
                    "character it cannot store)."
                ) from None

        return Endpoint(guarded, access=Access.ADMIN, reads_body=reads_body)

    def match(self, method: str, path: str) -> Endpoint:
        """The endpoint for a path under ADMIN_PREFIX (a trailing slash names the same route;
        HEAD is served wherever GET is)."""
        parts = path.removeprefix(ADMIN_PREFIX).removesuffix("/").split("/")
        method = "GET" if method == "HEAD" else method
        collection = "/".join(parts)
        if collection in self.collections:
            methods = self.collections[collection]
            if method not in methods:
                not_allowed(set(methods))
            return methods[method]
        item_methods = self.items.get((parts[0], parts[2] if len(parts) == 3 else ""))
        if item_methods is None or len(parts) not in (2, 3) or not 0 < len(parts[1]) <= ID_LENGTH:
            raise NotFound(f"Unknown admin route. See {ADMIN_PREFIX}keys and {ADMIN_PREFIX}teams.")
        found = item_methods.get(method)
        if found is None:
            not_allowed(set(item_methods))
        handle, reads_body = found
        return self.endpoint(partial(handle, parts[1]), reads_body=reads_body)

    async def create_key(self, call: Call) -> Response:
        """POST /admin/v1/keys."""
        return issued(await self.admin.create_key(validated(KeyCreate, body_of(call))), is_new=True)

    async def list_keys(self, call: Call) -> Response:
        """GET /admin/v1/keys?limit=&after=&team=."""
        page = await self.admin.list_keys(validated(KeyQuery, query_of(call)))
        return json_response(page_view(page, key_view))

    async def show_key(self, key_id: str, _: Call) -> Response:
        """GET /admin/v1/keys/{id}."""
        return json_response(key_view(await self.admin.key(key_id)))

    async def update_key(self, key_id: str, call: Call) -> Response:
        """PATCH /admin/v1/keys/{id}."""
        request = validated(KeyUpdate, body_of(call))
        return json_response(key_view(await self.admin.update_key(key_id, request)))

    async def disable_key(self, key_id: str, _: Call) -> Response:
        """POST /admin/v1/keys/{id}/disable."""
        return json_response(key_view(await self.admin.disable_key(key_id)))

    async def rotate_key(self, key_id: str, call: Call) -> Response:
        """POST /admin/v1/keys/{id}/rotate (the body is optional)."""
        request = validated(KeyRotate, body_of(call, is_optional=True))
        return issued(await self.admin.rotate_key(key_id, request), is_new=False)

    async def delete_key(self, key_id: str, _: Call) -> Response:
        """DELETE /admin/v1/keys/{id}."""
        await self.admin.delete_key(key_id)
        return json_response(deleted_view(key_id, KEY_OBJECT))

    async def create_team(self, call: Call) -> Response:
        """POST /admin/v1/teams."""
        team = await self.admin.create_team(validated(TeamCreate, body_of(call)))
        return created(team_view(team))

    async def list_teams(self, call: Call) -> Response:
        """GET /admin/v1/teams?limit=&after=."""
        page = await self.admin.list_teams(validated(PageQuery, query_of(call)))
        return json_response(page_view(page, team_view))

    async def show_team(self, team_id: str, _: Call) -> Response:
        """GET /admin/v1/teams/{id}."""
        return json_response(team_view(await self.admin.team(team_id)))

    async def update_team(self, team_id: str, call: Call) -> Response:
        """PATCH /admin/v1/teams/{id}."""
        request = validated(TeamUpdate, body_of(call))
        return json_response(team_view(await self.admin.update_team(team_id, request)))

    async def disable_team(self, team_id: str, _: Call) -> Response:
        """POST /admin/v1/teams/{id}/disable."""
        return json_response(team_view(await self.admin.disable_team(team_id)))

    async def delete_team(self, team_id: str, _: Call) -> Response:
        """DELETE /admin/v1/teams/{id}."""
        await self.admin.delete_team(team_id)
        return json_response(deleted_view(team_id, TEAM_OBJECT))

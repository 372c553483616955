"""The endpoints (chat completions, model lists, deployment health, health, readiness) and the
route table that finds one for a method and path."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn, Protocol

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response

from ai_gateway.api.body import parse_chat_request
from ai_gateway.api.record import RequestRecord
from ai_gateway.api.streaming import event_stream
from ai_gateway.config.constants import (
    ADMIN_PREFIX,
    CHAT_COMPLETIONS_PATH,
    DEPLOYMENT_HEADER,
    DEPLOYMENTS_HEALTH_PATH,
    HEALTH_PATH,
    METRICS_PATH,
    MOCK_HEADER,
    MODELS_PATH,
    OPENAPI_PATH,
    READY_PATH,
)
from ai_gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from ai_gateway.keys.caller import Caller
from ai_gateway.limits.admission import Admission
from ai_gateway.providers.protocol import ChatProvider
from ai_gateway.routing.route import Deployment, Route, Served
from ai_gateway.routing.router import Router
from ai_gateway.schemas import ChatCompletionRequest, ModelCard, ModelList
from ai_gateway.usage.ledger import Ledger

log = structlog.get_logger(__name__)

ALIAS_OWNER = "ai_gateway"


@dataclass(frozen=True, slots=True)
class Call:
    """One request as an endpoint sees it: authenticated, its provider found, its body read."""

    request: Request
    record: RequestRecord
    provider: ChatProvider | None
    body: bytes


Handler = Callable[[Call], Awaitable[Response]]


class Access(StrEnum):
    """Which key a route takes."""

    PUBLIC = "public"
    CALLER = "caller"
    """A caller's key: static (GATEWAY_API_KEYS) or virtual."""
    ADMIN = "admin"
    """An admin key (GATEWAY_ADMIN_KEYS)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What serves one method on one path, and what the dispatch does before it."""

    handle: Handler
    access: Access = Access.CALLER
    reads_body: bool = False


def json_response(payload: object, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON body serialised with orjson."""
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def served_headers(deployment: Deployment) -> dict[str, str]:
    """Response headers naming what served the request (model ids are checked at the door to
    be printable ASCII, so they are safe in a header)."""
    headers = {DEPLOYMENT_HEADER: deployment.key}
    if deployment.provider.is_mock:
        headers[MOCK_HEADER] = "true"
    return headers


def note_served(record: RequestRecord, served: Served[Any], started: float) -> None:
    """The log line's figures for the deployment that answered."""
    record.note_upstream(started)
    record.provider = served.deployment.provider.name
    record.model = served.deployment.model
    record.is_mock = served.deployment.provider.is_mock
    record.attempts = served.attempts


async def complete(
    router: Router,
    route: Route,
    body: ChatCompletionRequest,
    record: RequestRecord,
    *,
    send_timeout_s: float,
) -> Response:
    """Serve one chat request over `route`, as JSON or as an event stream."""
    record.route, record.is_stream = route.name, body.is_streaming
    try:
        if body.is_streaming:
            return await stream_response(router, route, body, record, send_timeout_s=send_timeout_s)
        return await json_answer(router, route, body, record)
    except GatewayError as error:
        record.attempts = error.attempts
        raise


async def json_answer(
    router: Router, route: Route, body: ChatCompletionRequest, record: RequestRecord
) -> Response:
    """The completion as one JSON body."""
    started = time.perf_counter()
    answer = await router.complete(route, body)
    note_served(record, answer, started)
    record.usage = answer.value.usage
    return json_response(answer.value.data, served_headers(answer.deployment))


async def stream_response(
    router: Router,
    route: Route,
    body: ChatCompletionRequest,
    record: RequestRecord,
    *,
    send_timeout_s: float,
) -> Response:
    """The completion as server-sent events, once its first chunk has arrived."""
    started = time.perf_counter()
    stream = await router.open_stream(route, body)
    note_served(record, stream, started)
    return event_stream(
        stream.value.first,
        stream.value.rest,
        include_usage=body.wants_stream_usage,
        record=record,
        headers=served_headers(stream.deployment),
        close=stream.value.aclose,
        send_timeout_s=send_timeout_s,
    )


def check_model_access(caller: Caller, model: str, provider: ChatProvider | None) -> None:
    """A key limited to some models gets OpenAI's 404 for any other (the same answer as for a
    model that does not exist, so a key learns nothing about models it may not use)."""
    name = model if provider is None else f"{provider.name}/{model}"
    if not caller.may_use(name):
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )


def model_list(cards: list[ModelCard]) -> Response:
    """The OpenAI list shape."""
    return json_response(ModelList(data=cards).model_dump(mode="json"))


class Endpoints:
    """Every endpoint, over the router (and through it the registry)."""

    def __init__(
        self,
        router: Router,
        *,
        admission: Admission,
        ledger: Ledger,
        max_json_depth: int,
        send_timeout_s: float,
        openapi: bytes,
    ) -> None:
        self.router = router
        self.admission = admission
        self.ledger = ledger
        self.openapi = openapi
        self.max_json_depth = max_json_depth
        self.send_timeout_s = send_timeout_s
        self.ready = True

    async def chat_completions(self, call: Call) -> Response:
        """`model` is an alias or `<provider>/<model id>`; on `/{provider}/v1/...` the
        provider's own model id."""
        body = parse_chat_request(call.body, max_depth=self.max_json_depth)
        router, record = self.router, call.record
        if record.caller is not None:
            check_model_access(record.caller, body.model, call.provider)
        route = (
            router.route(body.model)
            if call.provider is None
            else router.direct(call.provider, body.model)
        )
        if record.caller is not None:
            try:
                record.ticket = await self.admission.admit(record.caller, body, route)
            except RateLimited:
                self.ledger.reject(record, route, body)
                raise
        self.ledger.reserve(record, route, body)
        return await complete(router, route, body, record, send_timeout_s=self.send_timeout_s)

    async def models(self, call: Call) -> Response:
        """One provider's models with bare ids; or the aliases, then every provider's models
        under the ids the unified route takes."""
        caller = call.record.caller
        if call.provider is not None:
            cards = await call.provider.list_models()
            if caller is not None and caller.models is not None:
                prefix = call.provider.name + "/"
                cards = [c for c in cards if caller.may_use(prefix + c.id)]
            return model_list(cards)
        cards = await self.unified_models()
        if caller is not None and caller.models is not None:
            cards = [c for c in cards if caller.may_use(c.id)]
        return model_list(cards)

    async def unified_models(self) -> list[ModelCard]:
        """The providers are asked together; one that fails is left out (and logged), so one
        vendor's outage does not hide every other vendor's models. If every provider fails, so
        does the list."""
        providers = list(self.router.registry)
        answers = await asyncio.gather(
            *(p.list_models() for p in providers), return_exceptions=True
        )
        cards = [ModelCard(id=name, owned_by=ALIAS_OWNER) for name in self.router.aliases]
        failures: list[GatewayError] = []
        for provider, answer in zip(providers, answers, strict=True):
            if isinstance(answer, GatewayError):
                log.warning("model_list_failed", provider=provider.name, code=answer.code)
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                cards += [
                    card.model_copy(update={"id": f"{provider.name}/{card.id}"}) for card in answer
                ]
        if failures and len(failures) == len(providers):
            raise failures[0]
        return cards

    async def deployments_health(self, call: Call) -> Response:
        """Every known deployment's circuit breaker, and each alias's deployments in order; a
        key limited to some models sees only those (its aliases and their deployments)."""
        router, caller = self.router, call.record.caller
        aliases = {
            name: [d.key for d in r.deployments]
            for name, r in router.aliases.items()
            if caller is None or caller.may_use(name)
        }
        visible = {key for keys in aliases.values() for key in keys}
        deployments = [
            snapshot
            for snapshot in (breaker.snapshot() for breaker in router.breakers)
            if caller is None
            or caller.models is None
            or caller.may_use(snapshot["deployment"])
            or snapshot["deployment"] in visible
        ]
        return json_response({"object": "list", "data": deployments, "aliases": aliases})

    async def health(self, _: Call) -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    async def openapi_document(self, _: Call) -> Response:
        """The OpenAPI document, built once at start-up."""
        return Response(self.openapi, media_type="application/json")

    async def readiness(self, _: Call) -> Response:
        """Readiness: the config is loaded and every provider built (both happen before the
        server listens); 503 once the gateway is shutting down."""
        if not self.ready:
            raise ServiceUnavailable("The gateway is shutting down.")
        return json_response({"status": "ready"})


Table = dict[str, dict[str, Endpoint]]


def not_allowed(methods: set[str]) -> NoReturn:
    """The 405 for a route that exists for other methods, with its `allow` header (HEAD
    wherever GET is)."""
    allowed = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
    raise MethodNotAllowed("Method not allowed on this route.", headers={"allow": allowed})


class AdminRoutes(Protocol):
    """The admin API's own table, under ADMIN_PREFIX."""

    def match(self, method: str, path: str) -> Endpoint:
        """The admin endpoint for a method and path."""
        ...


class Routes:
    """Method and path -> endpoint. `/{provider}/...` paths also name their provider.

    A trailing slash names the same route (no redirect); HEAD is served wherever GET is.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        admin: AdminRoutes | None = None,
        pages: Table | None = None,
        *,
        metrics: Endpoint | None = None,
    ) -> None:
        """`pages`: public static paths served as they are (the usage page, ui/page.py);
        `metrics`: the Prometheus exposition (observability/exposition.py)."""
        self.endpoints = endpoints
        self.admin = admin
        chat = Endpoint(endpoints.chat_completions, reads_body=True)
        models = Endpoint(endpoints.models)
        self.paths: Table = {
            CHAT_COMPLETIONS_PATH: {"POST": chat},
            MODELS_PATH: {"GET": models},
            DEPLOYMENTS_HEALTH_PATH: {"GET": Endpoint(endpoints.deployments_health)},
            HEALTH_PATH: {"GET": Endpoint(endpoints.health, access=Access.PUBLIC)},
            READY_PATH: {"GET": Endpoint(endpoints.readiness, access=Access.PUBLIC)},
            OPENAPI_PATH: {"GET": Endpoint(endpoints.openapi_document, access=Access.PUBLIC)},
            **(pages or {}),
            **({METRICS_PATH: {"GET": metrics}} if metrics is not None else {}),
        }
        self.provider_paths: Table = {
            CHAT_COMPLETIONS_PATH: {"POST": chat},
            MODELS_PATH: {"GET": models},
        }

    @property
    def ready(self) -> bool:
        """Whether /readyz says ready."""
        return self.endpoints.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.endpoints.ready = value

    def match(self, method: str, path: str) -> tuple[Endpoint, str | None]:
        """The endpoint and, on a `/{provider}/...` path, the provider's name."""
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        if path.startswith(ADMIN_PREFIX):
            if self.admin is None:
                raise NotFound("The admin API is off: set GATEWAY_ADMIN_KEYS to turn it on.")
            return self.admin.match(method, path), None
        methods = self.paths.get(path)
        provider = None
        if methods is None:
            provider, _, rest = path[1:].partition("/")
            methods = self.provider_paths.get("/" + rest) if provider else None
        if methods is None:
            raise NotFound("Unknown route. See /v1/chat/completions and /v1/models.")
        endpoint = methods.get("GET" if method == "HEAD" else method)
        if endpoint is None:
            not_allowed(set(methods))
        return endpoint, provider

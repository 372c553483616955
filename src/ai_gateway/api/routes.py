"""Routes: chat completions (unified and per provider), model lists, health."""

import asyncio
import time
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request, Response

from ai_gateway.api.auth import auth_bearer
from ai_gateway.api.body import read_chat_request
from ai_gateway.api.deps import CallerDep, RouterDep, router_of, settings_of
from ai_gateway.api.record import RequestRecord, record_of_request
from ai_gateway.api.streaming import event_stream
from ai_gateway.config.constants import (
    CHAT_COMPLETIONS_PATH,
    DEPLOYMENT_HEADER,
    DEPLOYMENTS_HEALTH_PATH,
    HEALTH_PATH,
    MOCK_HEADER,
    MODELS_PATH,
)
from ai_gateway.errors import GatewayError
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.routing.router import Router, Served
from ai_gateway.schemas import ChatCompletionRequest, ModelCard, ModelList

log = structlog.get_logger(__name__)

api_router = APIRouter()
ALIAS_OWNER = "ai_gateway"


def json_response(payload: object, headers: dict[str, str] | None = None) -> Response:
    """A JSON body serialised with orjson."""
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def served_headers(deployment: Deployment) -> dict[str, str]:
    """Response headers naming what served the request."""
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
    router: Router, route: Route, body: ChatCompletionRequest, record: RequestRecord
) -> Response:
    """Serve one chat request over `route`, as JSON or as an event stream."""
    record.route, record.is_stream = route.name, body.is_streaming
    try:
        if body.is_streaming:
            return await stream_response(router, route, body, record)
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
    router: Router, route: Route, body: ChatCompletionRequest, record: RequestRecord
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
    )


async def unified_chat_completions(request: Request) -> Response:
    """`model` is an alias or `<provider>/<model id>`."""
    await auth_bearer(request)
    body = await read_chat_request(request, settings_of(request).max_request_bytes)
    router = router_of(request)
    return await complete(router, router.route(body.model), body, record_of_request())


async def provider_chat_completions(request: Request) -> Response:
    """`model` is the provider's own model id."""
    await auth_bearer(request)
    router = router_of(request)
    # an unknown provider is a 404 before the body is read
    provider = router.registry.provider(request.path_params["provider_name"])
    body = await read_chat_request(request, settings_of(request).max_request_bytes)
    return await complete(router, router.direct(provider, body.model), body, record_of_request())


# The chat routes call auth themselves: api/hot_path.py serves them in front of FastAPI;
# registered here as well, other methods on their paths get FastAPI's 405.
api_router.add_route(CHAT_COMPLETIONS_PATH, unified_chat_completions, methods=["POST"])
api_router.add_route(
    "/{provider_name}" + CHAT_COMPLETIONS_PATH, provider_chat_completions, methods=["POST"]
)


def model_list(cards: list[ModelCard]) -> Response:
    """The OpenAI list shape."""
    return json_response(ModelList(data=cards).model_dump(mode="json"))


@api_router.get(MODELS_PATH)
async def unified_models(_: CallerDep, router: RouterDep) -> Response:
    """The aliases, then every provider's models, under the ids the unified route takes.

    The providers are asked together; one that fails is left out (and logged), so one vendor's
    outage does not hide every other vendor's models. If every provider fails, so does the list.
    """
    providers = list(router.registry)
    answers = await asyncio.gather(*(p.list_models() for p in providers), return_exceptions=True)
    cards = [ModelCard(id=name, owned_by=ALIAS_OWNER) for name in router.aliases]
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
    return model_list(cards)


@api_router.get("/{provider_name}" + MODELS_PATH)
async def provider_models(provider_name: str, _: CallerDep, router: RouterDep) -> Response:
    """One provider's models, with bare ids."""
    return model_list(await router.registry.provider(provider_name).list_models())


@api_router.get(DEPLOYMENTS_HEALTH_PATH)
async def deployments_health(_: CallerDep, router: RouterDep) -> Response:
    """Every known deployment's circuit breaker, and each alias's deployments in order."""
    aliases = {name: [d.key for d in route.deployments] for name, route in router.aliases.items()}
    deployments = [breaker.snapshot() for breaker in router.breakers]
    return json_response({"object": "list", "data": deployments, "aliases": aliases})


@api_router.get(HEALTH_PATH)
async def health() -> Response:
    """Liveness; needs no key."""
    return json_response({"status": "ok"})

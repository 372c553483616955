"""Routes: chat completions (unified and per provider), model lists, health."""

import asyncio
import time

import orjson
import structlog
from fastapi import APIRouter, Request, Response

from ai_gateway.api.auth import auth_bearer
from ai_gateway.api.body import read_chat_request
from ai_gateway.api.deps import CallerDep, RegistryDep, registry_of, settings_of
from ai_gateway.api.record import RequestRecord, record_of_request
from ai_gateway.api.streaming import open_event_stream
from ai_gateway.config.constants import (
    CHAT_COMPLETIONS_PATH,
    HEALTH_PATH,
    MOCK_HEADER,
    MODELS_PATH,
)
from ai_gateway.errors import GatewayError
from ai_gateway.providers.base import ChatProvider
from ai_gateway.schemas import ChatCompletionRequest, ModelCard, ModelList

log = structlog.get_logger(__name__)

api_router = APIRouter()


def json_response(payload: object, headers: dict[str, str] | None = None) -> Response:
    """A JSON body serialised with orjson."""
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


async def complete(
    provider: ChatProvider, body: ChatCompletionRequest, record: RequestRecord
) -> Response:
    """Serve one chat request from `provider`, as JSON or as an event stream."""
    record.provider, record.model, record.is_mock = provider.name, body.model, provider.is_mock
    record.is_stream = body.is_streaming
    headers = {MOCK_HEADER: "true"} if provider.is_mock else {}
    if body.is_streaming:
        chunks = provider.stream_chat_completions(body)
        return await open_event_stream(
            chunks, include_usage=body.wants_stream_usage, record=record, headers=headers
        )
    started = time.perf_counter()
    completion = await provider.chat_completions(body)
    record.note_upstream(started)
    record.usage = completion.usage
    return json_response(completion.data, headers)


async def unified_chat_completions(request: Request) -> Response:
    """`model` is `<provider>/<model id>`."""
    await auth_bearer(request)
    body = await read_chat_request(request, settings_of(request).max_request_bytes)
    provider, model_id = registry_of(request).resolve(body.model)
    return await complete(
        provider, body.model_copy(update={"model": model_id}), record_of_request()
    )


async def provider_chat_completions(request: Request) -> Response:
    """`model` is the provider's own model id."""
    await auth_bearer(request)
    provider = registry_of(request).provider(request.path_params["provider_name"])
    body = await read_chat_request(request, settings_of(request).max_request_bytes)
    return await complete(provider, body, record_of_request())


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
async def unified_models(_: CallerDep, registry: RegistryDep) -> Response:
    """Every provider's models, under the ids the unified route takes.

    The providers are asked together; one that fails is left out (and logged), so one vendor's
    outage does not hide every other vendor's models. If every provider fails, so does the list.
    """
    providers = list(registry)
    answers = await asyncio.gather(*(p.list_models() for p in providers), return_exceptions=True)
    cards: list[ModelCard] = []
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
async def provider_models(provider_name: str, _: CallerDep, registry: RegistryDep) -> Response:
    """One provider's models, with bare ids."""
    return model_list(await registry.provider(provider_name).list_models())


@api_router.get(HEALTH_PATH)
async def health() -> Response:
    """Liveness; needs no key."""
    return json_response({"status": "ok"})

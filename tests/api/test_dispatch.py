"""The one dispatch: routes and methods, HEAD, readiness, trailing slashes, a caller who leaves,
and one error renderer (and its `upstream_failure` line) for every route."""

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from ai_gateway.api import dispatch, renderer
from ai_gateway.app import create_app
from ai_gateway.config.settings import Settings
from ai_gateway.errors import ProviderError
from ai_gateway.providers.registry import Registry
from ai_gateway.schemas import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from tests.conftest import ONE_ATTEMPT, serve_app
from tests.fakes import GATEWAY_KEY, MODEL, FakeProvider, chat_body

UNIFIED_MODEL = f"cerebras/{MODEL}"


@dataclass
class HangingProvider(FakeProvider):
    """Never answers; records that its call started and that it was cancelled."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[bool] = field(default_factory=list)

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        self.requests.append(req)
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(True)
            raise
        raise AssertionError("unreachable")

    async def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        await self.chat_completions(req)
        yield  # pragma: no cover


def scope_of(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI HTTP scope."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": ("gateway", 80),
        "client": ("127.0.0.1", 1234),
    }


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_caller_that_leaves_cancels_the_routing_and_is_logged_as_client_closed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    provider = HangingProvider()
    app = create_app(settings, registry=Registry({"cerebras": provider}), config=ONE_ATTEMPT)
    body = orjson.dumps(chat_body(model=UNIFIED_MODEL, stream=stream))
    headers = [(b"authorization", f"Bearer {GATEWAY_KEY}".encode())]
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await provider.started.wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    monkeypatch.setattr(dispatch, "log", structlog.get_logger())
    with capture_logs() as logs, anyio.fail_after(2):
        await app(scope_of("POST", "/v1/chat/completions", headers), receive, send)

    assert provider.cancelled == [True]
    assert sent == []
    line = next(entry for entry in logs if entry["event"] == "request")
    assert (line["status"], line["error_code"]) == (499, "client_closed")


@pytest.mark.anyio
async def test_a_caller_that_leaves_while_sending_its_body_is_client_closed_not_a_500(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FakeProvider()
    app = create_app(settings, registry=Registry({"cerebras": provider}), config=ONE_ATTEMPT)
    headers = [(b"authorization", f"Bearer {GATEWAY_KEY}".encode())]
    messages = iter(
        [
            {"type": "http.request", "body": b'{"model": "cerebras/', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    monkeypatch.setattr(dispatch, "log", structlog.get_logger())
    with capture_logs() as logs:
        await app(scope_of("POST", "/v1/chat/completions", headers), receive, send)

    assert sent == []
    assert provider.requests == []
    assert [e["event"] for e in logs] == ["request"]
    assert (logs[0]["status"], logs[0]["error_code"]) == (499, "client_closed")


@pytest.mark.anyio
async def test_a_cancellation_from_elsewhere_is_not_swallowed(settings: Settings) -> None:
    provider = HangingProvider()
    app = create_app(settings, registry=Registry({"cerebras": provider}), config=ONE_ATTEMPT)
    body = orjson.dumps(chat_body(model=UNIFIED_MODEL))
    headers = [(b"authorization", f"Bearer {GATEWAY_KEY}".encode())]
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent")

    task = asyncio.ensure_future(
        app(scope_of("POST", "/v1/chat/completions", headers), receive, send)
    )
    with anyio.fail_after(2):
        await provider.started.wait()
        task.cancel()
        await asyncio.wait({task})

    assert task.cancelled()
    assert provider.cancelled == [True]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/models/", "/cerebras/v1/models/", "/healthz/"])
async def test_a_trailing_slash_is_the_same_route_not_a_redirect(client: Any, path: str) -> None:
    response = await client.get(path, headers={"host": "evil.example"})

    assert response.status_code == 200
    assert "location" not in response.headers


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_monitors_may_use_head(client: Any, path: str) -> None:
    head = await client.head(path)
    get = await client.get(path)

    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


@pytest.mark.anyio
async def test_readyz_answers_ready_without_a_key(settings: Settings) -> None:
    async with serve_app(settings, Registry({"cerebras": FakeProvider()}), key=None) as http:
        response = await http.get("/readyz")

    assert response.json() == {"status": "ready"}


@pytest.mark.anyio
async def test_readyz_is_503_once_shutting_down(settings: Settings) -> None:
    app = create_app(settings, registry=Registry({"cerebras": FakeProvider()}))
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(_: dict[str, Any]) -> None:
        return None

    await app({"type": "lifespan"}, receive, send)
    sent: list[dict[str, Any]] = []

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    async def no_body() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope_of("GET", "/readyz", []), no_body, collect)

    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "service_unavailable"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
)
async def test_every_route_logs_an_upstream_failure_through_the_one_renderer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> None:
    provider = FakeProvider(error=ProviderError("cerebras returned HTTP 500"))
    monkeypatch.setattr(renderer, "log", structlog.get_logger())
    with capture_logs() as logs:
        async with serve_app(settings, Registry({"cerebras": provider})) as http:
            response = await http.request(method, path, json=chat_body(model=UNIFIED_MODEL))

    assert response.status_code == 502
    failures = [entry for entry in logs if entry["event"] == "upstream_failure"]
    assert [(f["code"], f["status"]) for f in failures] == [("upstream_error", 502)]


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["cerebras/ok\u200b", "ok\u0001", "cerebras/模型"])
async def test_a_model_id_that_is_not_printable_ascii_is_a_400_before_any_upstream_call(
    client: Any, provider: FakeProvider, model: str
) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(model=model))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert provider.requests == []


@pytest.mark.anyio
async def test_a_body_nested_too_deep_is_a_400_before_any_upstream_call(
    client: Any, provider: FakeProvider
) -> None:
    deep = "[" * 300 + "]" * 300
    body = orjson.dumps(chat_body(model=UNIFIED_MODEL))[:-1] + b', "x": ' + deep.encode() + b"}"

    response = await client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "nesting_too_deep"
    assert provider.requests == []


@pytest.mark.anyio
async def test_the_openapi_document_is_served_without_a_key_and_describes_every_route(
    settings: Settings,
) -> None:
    async with serve_app(settings, Registry({"cerebras": FakeProvider()}), key=None) as http:
        response = await http.get("/openapi.json")

    document = response.json()
    assert response.status_code == 200
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/chat/completions",
        "/{provider}/v1/chat/completions",
        "/v1/models",
        "/{provider}/v1/models",
        "/v1/deployments/health",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert document["paths"]["/metrics"]["get"]["security"] == []
    request = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    reference = request["content"]["application/json"]["schema"]["$ref"]
    shape = document["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    assert shape["required"] == ["model", "messages"]
    assert shape["properties"]["model"]["maxLength"] == 256


@pytest.mark.anyio
async def test_the_openapi_document_secures_metrics_when_they_need_an_admin_key(
    settings: Settings,
) -> None:
    admin_only = settings.model_copy(
        update={"metrics_require_admin": True, "gateway_admin_keys": (SecretStr("sk-admin"),)}
    )
    async with serve_app(admin_only, Registry({"cerebras": FakeProvider()}), key=None) as http:
        document = (await http.get("/openapi.json")).json()

    assert document["paths"]["/metrics"]["get"]["security"] == [{"adminKey": []}]
    assert document["components"]["securitySchemes"]["adminKey"]["scheme"] == "bearer"

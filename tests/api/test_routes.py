"""The HTTP API through the app with a FakeProvider: auth, envelopes, JSON and SSE responses."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from ai_gateway.config.settings import Settings
from ai_gateway.errors import ProviderError, RateLimited
from ai_gateway.providers.registry import Registry
from ai_gateway.schemas import as_python, python_params
from tests.conftest import make_settings, serve_app
from tests.fakes import GATEWAY_KEY, MODEL, NORMALISED_COMPLETION, FakeProvider, chat_body
from tests.openai_spec import assert_chunk, assert_completion, assert_error, assert_model_list

CHAT = "/v1/chat/completions"
PROVIDER_CHAT = "/cerebras/v1/chat/completions"
UNIFIED_MODEL = f"cerebras/{MODEL}"
GENERATED_ID = re.compile(r"req_[0-9a-f]{32}")
ENVELOPE_FIELDS = {"message", "type", "param", "code"}


@asynccontextmanager
async def serve(
    settings: Settings, provider: FakeProvider, *, key: str | None = GATEWAY_KEY
) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the app serving `provider`; `key=None` sends no Authorization header."""
    async with serve_app(settings, Registry({provider.name: provider}), key=key) as http:
        yield http


@pytest.fixture
async def anon(settings: Settings, provider: FakeProvider) -> AsyncIterator[httpx.AsyncClient]:
    """The same app as `client`, without any Authorization header."""
    async with serve(settings, provider, key=None) as http:
        yield http


def assert_envelope(
    response: httpx.Response, status: int, error_type: str, *, code: str | None, param: str | None
) -> str:
    """The response is exactly the OpenAI error envelope; returns its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert_error(body)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert (error["type"], error["code"], error["param"]) == (error_type, code, param)
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an event-stream body, checking the framing on the way."""
    text = response.text
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(frame.startswith("data: ") for frame in frames), frames
    return [frame.removeprefix("data: ") for frame in frames]


def stream_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """The chunks of a complete stream, each valid per the OpenAI spec, [DONE] last."""
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    for chunk in chunks:
        assert_chunk(chunk)
    return chunks


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


UNAUTHORISED_REQUESTS = [
    pytest.param({}, "", id="missing-header"),
    pytest.param({"Authorization": "Bearer sk-wrong-key"}, "", id="wrong-key"),
    pytest.param({"Authorization": f"Basic {GATEWAY_KEY}"}, "", id="basic-scheme"),
    pytest.param({"Authorization": "Bearer "}, "", id="bearer-empty-token"),
    pytest.param({"Authorization": "Bearer"}, "", id="bearer-no-token"),
    pytest.param({"Authorization": GATEWAY_KEY}, "", id="key-without-scheme"),
    pytest.param({}, f"?api_key={GATEWAY_KEY}", id="key-in-query-string"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "query"), UNAUTHORISED_REQUESTS)
async def test_chat_completions_without_a_valid_bearer_key_is_401(
    anon: httpx.AsyncClient, provider: FakeProvider, headers: dict[str, str], query: str
) -> None:
    response = await anon.post(CHAT + query, json=chat_body(model=UNIFIED_MODEL), headers=headers)

    assert_envelope(response, 401, "authentication_error", code="invalid_api_key", param=None)
    assert response.headers["www-authenticate"] == "Bearer"
    assert provider.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "query"), UNAUTHORISED_REQUESTS)
@pytest.mark.parametrize("path", ["/v1/models", "/cerebras/v1/models"])
async def test_model_lists_without_a_valid_bearer_key_are_401(
    anon: httpx.AsyncClient, path: str, headers: dict[str, str], query: str
) -> None:
    response = await anon.get(path + query, headers=headers)

    assert_envelope(response, 401, "authentication_error", code="invalid_api_key", param=None)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
async def test_provider_route_without_a_key_is_401_before_any_provider_work(
    anon: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await anon.post(PROVIDER_CHAT, json=chat_body())

    assert_envelope(response, 401, "authentication_error", code="invalid_api_key", param=None)
    assert provider.requests == []


@pytest.mark.anyio
async def test_bearer_scheme_is_case_insensitive(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/v1/models", headers={"Authorization": f"bearer {GATEWAY_KEY}"})

    assert response.status_code == 200


@pytest.mark.anyio
async def test_healthz_needs_no_key(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.anyio
async def test_unified_route_sends_the_bare_model_id_to_the_provider(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert_completion(response.json())
    assert response.json() == NORMALISED_COMPLETION
    assert [r.model for r in provider.requests] == [MODEL]
    assert as_python(provider.requests[0].upstream_messages()) == [
        {"role": "user", "content": "hello"}
    ]


@pytest.mark.anyio
async def test_provider_route_takes_the_bare_model_id(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await client.post(PROVIDER_CHAT, json=chat_body(temperature=0.5))

    assert response.status_code == 200
    assert_completion(response.json())
    assert response.json() == NORMALISED_COMPLETION
    assert [r.model for r in provider.requests] == [MODEL]
    assert python_params(provider.requests[0].upstream_params()) == {"temperature": 0.5}


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("is_mock", [False, True])
async def test_mock_header_is_present_only_when_the_provider_is_a_mock(
    client: httpx.AsyncClient, provider: FakeProvider, is_mock: bool, stream: bool
) -> None:
    provider.is_mock = is_mock

    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL, stream=stream))

    assert response.status_code == 200
    assert response.headers.get("x-ai-gateway-mock") == ("true" if is_mock else None)


async def respond(client: httpx.AsyncClient, provider: FakeProvider, kind: str) -> httpx.Response:
    """One response of the given kind."""
    if kind == "success":
        return await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))
    if kind == "stream":
        return await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL, stream=True))
    if kind == "400":
        return await client.post(CHAT, content=b"{", headers={"content-type": "application/json"})
    if kind == "401":
        return await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    if kind == "404":
        return await client.get("/no/such/route")
    if kind == "405":
        return await client.delete("/healthz")
    if kind == "500":
        provider.error = RuntimeError("boom")
    else:
        provider.error = ProviderError("upstream down")
    return await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))


STATUS_OF_KIND = {
    "success": 200,
    "stream": 200,
    "400": 400,
    "401": 401,
    "404": 404,
    "405": 405,
    "500": 500,
    "502": 502,
}
RESPONSE_KINDS = list(STATUS_OF_KIND)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", RESPONSE_KINDS)
async def test_every_response_carries_a_generated_request_id(
    client: httpx.AsyncClient, provider: FakeProvider, kind: str
) -> None:
    response = await respond(client, provider, kind)

    assert response.status_code == STATUS_OF_KIND[kind]
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.anyio
async def test_request_ids_differ_between_requests(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", RESPONSE_KINDS)
@pytest.mark.parametrize("request_id", ["abc-123_X.y:z", "a" * 128], ids=["mixed", "max-length"])
async def test_a_sane_caller_request_id_is_echoed(
    client: httpx.AsyncClient, provider: FakeProvider, kind: str, request_id: str
) -> None:
    client.headers["x-request-id"] = request_id

    response = await respond(client, provider, kind)

    assert response.headers.get_list("x-request-id") == [request_id]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param("a" * 129, id="too-long"),
        pytest.param("has spaces in it", id="spaces"),
        pytest.param("<script>alert(1)</script>", id="angle-brackets"),
        pytest.param("", id="empty"),
    ],
)
async def test_an_insane_caller_request_id_is_replaced(
    client: httpx.AsyncClient, request_id: str
) -> None:
    response = await client.post(
        CHAT, json=chat_body(model=UNIFIED_MODEL), headers={"x-request-id": request_id}
    )

    assert response.status_code == 200
    assert response.headers.get_list("x-request-id") != [request_id]
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.anyio
async def test_internal_error_message_quotes_the_echoed_request_id(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = RuntimeError("secret-ish detail")

    response = await client.post(
        CHAT, json=chat_body(model=UNIFIED_MODEL), headers={"x-request-id": "trace-42"}
    )

    message = assert_envelope(response, 500, "api_error", code="internal_error", param=None)
    assert "trace-42" in message


JSON = {"content-type": "application/json"}


def raw(body: object) -> bytes:
    return orjson.dumps(body)


def without(key: str) -> dict[str, Any]:
    body = chat_body(model=UNIFIED_MODEL)
    del body[key]
    return body


BAD_REQUESTS = [
    pytest.param(b'{"model": "cerebras/x", "messages": [', JSON, None, "invalid_json", id="json"),
    pytest.param(raw([chat_body(model=UNIFIED_MODEL)]), JSON, None, "invalid_json", id="array"),
    pytest.param(b"", JSON, None, "invalid_json", id="empty-body"),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL)),
        {"content-type": "text/plain"},
        None,
        "invalid_content_type",
        id="text-plain",
    ),
    pytest.param(raw(without("model")), JSON, "model", None, id="missing-model"),
    pytest.param(raw(chat_body(model="")), JSON, "model", None, id="empty-model"),
    pytest.param(raw(without("messages")), JSON, "messages", None, id="missing-messages"),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL, messages=[])), JSON, "messages", None, id="no-messages"
    ),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL, messages=[{"content": "hi"}])),
        JSON,
        "messages.[0].role",
        None,
        id="message-without-role",
    ),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL, messages=[{"role": "robot", "content": "hi"}])),
        JSON,
        "messages.[0].role",
        None,
        id="unknown-role",
    ),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL, messages=[{"role": "user", "content": 5}])),
        JSON,
        "messages.[0].content",
        None,
        id="integer-content",
    ),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL, temperature="0.5")),
        JSON,
        "temperature",
        None,
        id="string-temperature",
    ),
    pytest.param(
        raw(chat_body(model=UNIFIED_MODEL, messages=[{"role": "tool", "content": "42"}])),
        JSON,
        "messages.[0].tool_call_id",
        None,
        id="tool-message-without-tool-call-id",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("content", "headers", "param", "code"), BAD_REQUESTS)
@pytest.mark.parametrize("path", [CHAT, PROVIDER_CHAT])
async def test_invalid_bodies_are_400_naming_the_parameter(
    client: httpx.AsyncClient,
    provider: FakeProvider,
    path: str,
    content: bytes,
    headers: dict[str, str],
    param: str | None,
    code: str | None,
) -> None:
    response = await client.post(path, content=content, headers=headers)

    assert_envelope(response, 400, "invalid_request_error", code=code, param=param)
    assert provider.requests == []


@pytest.mark.anyio
async def test_null_param_and_code_are_json_null_not_the_string_none(
    client: httpx.AsyncClient,
) -> None:
    missing_param = await client.post(CHAT, content=b"[]", headers=JSON)
    missing_code = await client.post(CHAT, json=without("model"))

    assert missing_param.json()["error"]["param"] is None
    assert '"param":null' in missing_param.text
    assert missing_code.json()["error"]["code"] is None
    assert '"code":null' in missing_code.text
    assert "None" not in missing_param.text + missing_code.text


@pytest.mark.anyio
async def test_an_invalid_request_names_the_first_offending_parameter_and_what_it_should_be(
    client: httpx.AsyncClient,
) -> None:
    body = chat_body(model=UNIFIED_MODEL, temperature="hot", top_p="high")

    response = await client.post(CHAT, json=body)

    message = assert_envelope(
        response, 400, "invalid_request_error", code=None, param="temperature"
    )
    assert message == "Invalid request: 'temperature': Expected `float | null`, got `str`"


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["nope/x", MODEL, "cerebras/"])
async def test_unified_route_model_without_a_known_provider_is_404_model_not_found(
    client: httpx.AsyncClient, provider: FakeProvider, model: str
) -> None:
    response = await client.post(CHAT, json=chat_body(model=model))

    assert_envelope(response, 404, "invalid_request_error", code="model_not_found", param="model")
    assert provider.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/nope/v1/chat/completions"), ("GET", "/nope/v1/models")],
)
async def test_unknown_provider_path_is_404(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json=chat_body())

    message = assert_envelope(response, 404, "invalid_request_error", code="not_found", param=None)
    assert "nope" in message


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v2/chat/completions", "/", "/v1/embeddings"])
async def test_unknown_route_is_404_in_the_envelope(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert_envelope(response, 404, "invalid_request_error", code="not_found", param=None)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/cerebras/v1/chat/completions", "POST"),
        ("DELETE", "/healthz", "GET"),
        ("POST", "/v1/models", "GET"),
    ],
)
async def test_wrong_method_is_405_in_the_envelope(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)

    assert_envelope(response, 405, "invalid_request_error", code="method_not_allowed", param=None)
    assert allowed in response.headers["allow"]


LIMIT = 1024


def body_of_size(size: int) -> bytes:
    """A valid chat body of exactly `size` bytes."""
    base = raw(chat_body(model=UNIFIED_MODEL, user=""))
    body = raw(chat_body(model=UNIFIED_MODEL, user="x" * (size - len(base))))
    assert len(body) == size
    return body


@pytest.mark.anyio
async def test_body_at_the_limit_is_accepted(provider: FakeProvider) -> None:
    async with serve(make_settings(max_request_bytes=LIMIT), provider) as http:
        response = await http.post(CHAT, content=body_of_size(LIMIT), headers=JSON)

    assert response.status_code == 200
    assert len(provider.requests) == 1


@pytest.mark.anyio
async def test_body_over_the_limit_with_content_length_is_413(provider: FakeProvider) -> None:
    async with serve(make_settings(max_request_bytes=LIMIT), provider) as http:
        response = await http.post(CHAT, content=body_of_size(LIMIT + 1), headers=JSON)

    assert response.request.headers["content-length"] == str(LIMIT + 1)
    assert_envelope(response, 413, "invalid_request_error", code="request_too_large", param=None)
    assert provider.requests == []


@pytest.mark.anyio
async def test_chunked_body_over_the_limit_is_413(provider: FakeProvider) -> None:
    body = body_of_size(4 * LIMIT)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    async with serve(make_settings(max_request_bytes=LIMIT), provider) as http:
        response = await http.post(CHAT, content=pieces(), headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_envelope(response, 413, "invalid_request_error", code="request_too_large", param=None)
    assert provider.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_unexpected_provider_exception_is_a_generic_500_and_the_gateway_recovers(
    client: httpx.AsyncClient, provider: FakeProvider, stream: bool
) -> None:
    provider.error = RuntimeError("secret-ish detail")
    provider.fail_after = 0  # a stream fails before its first chunk

    failed = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL, stream=stream))

    message = assert_envelope(failed, 500, "api_error", code="internal_error", param=None)
    assert failed.headers["x-request-id"] in message
    assert "secret-ish" not in failed.text
    provider.error = None
    recovered = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))
    assert recovered.status_code == 200
    assert_completion(recovered.json())


@pytest.mark.anyio
async def test_provider_error_is_502(client: httpx.AsyncClient, provider: FakeProvider) -> None:
    provider.error = ProviderError("cerebras returned HTTP 503")

    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))

    assert response.status_code == 502
    assert response.json() == {
        "error": {
            "message": "cerebras returned HTTP 503",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert_error(response.json())


@pytest.mark.anyio
async def test_rate_limit_is_429_carrying_retry_after(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = RateLimited("Slow down.", headers={"retry-after": "7"})

    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json() == {
        "error": {
            "message": "Slow down.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert_error(response.json())


@pytest.mark.anyio
async def test_model_list_failure_is_the_providers_error(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = ProviderError("cerebras returned HTTP 500")

    response = await client.get("/v1/models")

    assert_envelope(response, 502, "upstream_error", code="upstream_error", param=None)


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "model"), [(CHAT, UNIFIED_MODEL), (PROVIDER_CHAT, MODEL)])
async def test_stream_is_sse_frames_of_valid_chunks_ending_with_done(
    client: httpx.AsyncClient, provider: FakeProvider, path: str, model: str
) -> None:
    response = await client.post(path, json=chat_body(model=model, stream=True))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.text.endswith("data: [DONE]\n\n")
    chunks = stream_chunks(response)
    assert len(chunks) == 5
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert streamed_text(chunks) == "Hello"
    assert {c["id"] for c in chunks} == {"chatcmpl-upstream-2"}
    assert [r.model for r in provider.requests] == [MODEL]
    assert provider.streams_closed == 1


@pytest.mark.anyio
async def test_stream_sends_the_usage_chunk_when_asked(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    body = chat_body(model=UNIFIED_MODEL, stream=True, stream_options={"include_usage": True})

    response = await client.post(CHAT, json=body)

    chunks = stream_chunks(response)
    assert len(chunks) == 6
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert all(c["choices"] for c in chunks[:-1])
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI sends them
    assert streamed_text(chunks) == "Hello"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "stream_options", [None, {"include_usage": False}], ids=["no-options", "include-usage-false"]
)
async def test_stream_omits_the_usage_chunk_unless_asked(
    client: httpx.AsyncClient, stream_options: dict[str, bool] | None
) -> None:
    body = chat_body(model=UNIFIED_MODEL, stream=True, stream_options=stream_options)

    response = await client.post(CHAT, json=body)

    chunks = stream_chunks(response)
    assert [c for c in chunks if not c["choices"]] == []
    assert all("usage" not in c for c in chunks)


@pytest.mark.anyio
async def test_stream_failing_before_its_first_chunk_is_a_plain_http_error(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = ProviderError("cerebras returned HTTP 503")
    provider.fail_after = 0

    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL, stream=True))

    message = assert_envelope(response, 502, "upstream_error", code="upstream_error", param=None)
    assert message == "cerebras returned HTTP 503"
    assert provider.streams_closed == 1


@pytest.mark.anyio
async def test_stream_failing_after_chunks_ends_with_an_error_event_then_done(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = ProviderError("cerebras returned HTTP 503")
    provider.fail_after = 2

    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL, stream=True))

    assert response.status_code == 200
    events = sse_events(response)
    assert len(events) == 4
    chunks = [orjson.loads(e) for e in events[:2]]
    for chunk in chunks:
        assert_chunk(chunk)
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant"}, {"content": "Hel"}]
    error_event = orjson.loads(events[2])
    assert error_event == {
        "error": {
            "message": "cerebras returned HTTP 503",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        },
        "status_code": 502,
    }
    assert_error(error_event)
    assert events[3] == "[DONE]"
    assert provider.streams_closed == 1


@pytest.mark.anyio
async def test_stream_crashing_after_chunks_ends_with_a_generic_error_event(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = RuntimeError("secret-ish detail")
    provider.fail_after = 2

    response = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL, stream=True))

    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    error_event = orjson.loads(events[-2])
    assert_error(error_event)
    assert error_event["error"]["type"] == "api_error"
    assert error_event["error"]["code"] == "internal_error"
    assert error_event["status_code"] == 500
    assert "secret-ish" not in response.text
    assert provider.streams_closed == 1


@pytest.mark.anyio
async def test_unified_model_list_prefixes_ids_with_the_provider(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/models")

    assert response.status_code == 200
    assert_model_list(response.json())
    assert response.json() == {
        "object": "list",
        "data": [{"id": UNIFIED_MODEL, "object": "model", "created": 0, "owned_by": "cerebras"}],
    }


@pytest.mark.anyio
async def test_provider_model_list_has_bare_ids(client: httpx.AsyncClient) -> None:
    response = await client.get("/cerebras/v1/models")

    assert response.status_code == 200
    assert_model_list(response.json())
    assert response.json() == {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "cerebras"}],
    }


@pytest.mark.anyio
async def test_server_timing_splits_gateway_and_upstream_time(client: httpx.AsyncClient) -> None:
    chat = await client.post(CHAT, json=chat_body(model=UNIFIED_MODEL))
    health = await client.get("/healthz")

    timing = re.fullmatch(
        r"gw;dur=([0-9.]+), upstream;dur=([0-9.]+), ttfb;dur=([0-9.]+)",
        chat.headers["server-timing"],
    )
    assert timing is not None
    gateway, upstream, first_byte = map(float, timing.groups())
    assert first_byte == pytest.approx(gateway + upstream, abs=0.002)
    assert re.fullmatch(r"gw;dur=[0-9.]+, ttfb;dur=[0-9.]+", health.headers["server-timing"])


@pytest.mark.anyio
async def test_an_unexpected_error_on_the_model_list_is_the_same_500_envelope(
    client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.error = RuntimeError("model list exploded with internal detail")

    response = await client.get("/v1/models", headers={"x-request-id": "trace-500"})

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-500"
    assert response.json() == {
        "error": {
            "message": "The gateway hit an unexpected error. "
            "Quote request id trace-500 when reporting it.",
            "type": "api_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert (await client.get("/healthz")).status_code == 200


@pytest.mark.anyio
async def test_the_model_list_leaves_out_a_failing_provider_and_keeps_the_others(
    settings: Settings,
) -> None:
    failing = FakeProvider(name="groq", error=ProviderError("groq unreachable"))
    working = FakeProvider()
    registry = Registry({"groq": failing, "cerebras": working})

    async with serve_app(settings, registry) as gw:
        unified = await gw.get("/v1/models")
        direct = await gw.get("/groq/v1/models")

    assert [m["id"] for m in unified.json()["data"]] == [f"cerebras/{MODEL}"]
    assert direct.status_code == 502

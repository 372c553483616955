"""Cerebras in real mode over both transports (the official SDK, the native OpenAI wire) against
the fake upstream over real HTTP: every test runs once per transport, so they cannot drift apart.
"""

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ai_gateway.errors import GatewayError, InvalidRequest, ProviderError, RateLimited
from ai_gateway.providers.cerebras_client import CerebrasAPI, CerebrasClient
from ai_gateway.providers.wire import USER_AGENT, OpenAIWire, WireClient
from tests.fake_upstream import FakeUpstream, RecordedRequest, Reply, json_reply, sse_reply
from tests.fakes import MODEL, UPSTREAM_KEY, chunk_payloads, completion_payload
from tests.streams import drain

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]


ClientFactory = Callable[..., CerebrasAPI]


@pytest.fixture(params=["native", "sdk"])
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[ClientFactory]:
    """Builds real-mode clients over the parametrized transport; closes them after the test."""
    clients: list[CerebrasAPI] = []
    wires: list[WireClient] = []

    def make(base_url: str, *, timeout: float = 2.0) -> CerebrasAPI:
        client: CerebrasAPI
        if request.param == "sdk":
            client = CerebrasClient(UPSTREAM_KEY, base_url=base_url, timeout=timeout)
        else:
            wires.append(WireClient(timeout=timeout))
            client = OpenAIWire(
                wires[-1], provider="cerebras", base_url=f"{base_url}/v1", api_key=UPSTREAM_KEY
            )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for wire in wires:
        await wire.aclose()


@pytest.fixture
def client(make_client: ClientFactory, fake_upstream: FakeUpstream) -> CerebrasAPI:
    """A real-mode client pointed at the fake upstream."""
    return make_client(fake_upstream.url)


def only_request(fake_upstream: FakeUpstream) -> RecordedRequest:
    """The one request the upstream received."""
    requests = fake_upstream.requests
    assert len(requests) == 1, [r.path for r in requests]
    return requests[0]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def collect(client: CerebrasAPI, **params: Any) -> list[dict[str, Any]]:
    """Every chunk of one stream."""
    return [
        chunk
        async for arrived in client.stream_chat(MODEL, MESSAGES, **params)
        for chunk in arrived
    ]


async def chat_error(client: CerebrasAPI) -> GatewayError:
    """The GatewayError one non-streaming call raises."""
    with pytest.raises(GatewayError) as info:
        await client.chat(MODEL, MESSAGES)
    return info.value


@pytest.mark.anyio
async def test_chat_returns_the_upstream_json_with_unknown_fields(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    payload = completion_payload(brand_new_top_level={"x": [1, 2]})
    payload["choices"][0]["message"]["reasoning"] = "thought about it"
    payload["choices"][0]["message"]["unknown_in_message"] = 7
    fake_upstream.reply(json_reply(payload))

    result = await client.chat(MODEL, MESSAGES)

    assert result == payload


@pytest.mark.anyio
async def test_chat_sends_the_exact_request(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload()))
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "unknown_message_field": {"a": 1}},
    ]
    known: dict[str, Any] = {
        "temperature": 0.2,
        "max_completion_tokens": 5,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "stop": ["END"],
        "seed": 42,
        "user": "u1",
        "reasoning_effort": "low",
    }
    unknown: dict[str, Any] = {"foo": {"bar": 1}, "timeout": 12, "cf_ray": "body-not-header"}

    await client.chat(MODEL, messages, **known, **unknown)

    request = only_request(fake_upstream)
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert "cf-ray" not in request.headers
    assert request.json == {"model": MODEL, "messages": messages, **known, **unknown}


@pytest.mark.anyio
async def test_chat_ignores_a_stream_param(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload()))

    await client.chat(MODEL, MESSAGES, stream=True)

    assert only_request(fake_upstream).json == {"model": MODEL, "messages": MESSAGES}


@pytest.mark.anyio
async def test_no_tcp_warming_request_is_ever_made(
    fake_upstream: FakeUpstream, make_client: ClientFactory
) -> None:
    fake_upstream.reply(json_reply(completion_payload()), sse_reply(chunk_payloads()))
    fake_upstream.reply(json_reply({"object": "list", "data": []}))
    client = make_client(fake_upstream.url, timeout=2.0)
    try:
        await client.chat(MODEL, MESSAGES)
        await collect(client)
        await client.list_models()
    finally:
        await client.aclose()

    paths = [r.path for r in fake_upstream.requests]
    assert paths == ["/v1/chat/completions", "/v1/chat/completions", "/v1/models"]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 429])
async def test_the_sdk_does_not_retry(
    client: CerebrasAPI, fake_upstream: FakeUpstream, status: int
) -> None:
    fake_upstream.reply_with(lambda _: json_reply({"error": {"message": "no"}}, status=status))

    await chat_error(client)

    assert len(fake_upstream.requests) == 1


@pytest.mark.anyio
async def test_stream_yields_chunks_as_dicts_and_sends_stream_true(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads()
    fake_upstream.reply(sse_reply(chunks))

    received = await collect(client, stream_options={"include_usage": True}, foo=1)

    assert received == chunks
    assert only_request(fake_upstream).json == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "foo": 1,
    }


@pytest.mark.anyio
async def test_stream_without_done_marker_gives_every_chunk(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(("a", "b", "c"))
    fake_upstream.reply(sse_reply(chunks, done=False))

    assert await collect(client) == chunks


@pytest.mark.anyio
async def test_list_models_returns_the_upstream_data(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    data = [
        {"id": MODEL, "object": "model", "created": 0, "owned_by": "Cerebras"},
        {"id": "zai-glm-4.7", "object": "model", "created": 1, "owned_by": "Cerebras", "x": 1},
    ]
    fake_upstream.reply(json_reply({"object": "list", "data": data}))

    assert await client.list_models() == data
    request = only_request(fake_upstream)
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


@pytest.mark.anyio
async def test_list_models_without_data_is_malformed(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"object": "list"}))

    with pytest.raises(ProviderError) as info:
        await client.list_models()

    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_repr_does_not_contain_the_key(client: CerebrasAPI) -> None:
    assert UPSTREAM_KEY not in repr(client)
    assert UPSTREAM_KEY not in str(client)


@pytest.mark.anyio
async def test_upstream_400_is_an_invalid_request_with_the_upstream_message(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    body = {"message": "temperature too high", "type": "invalid", "param": "temperature"}
    fake_upstream.reply(json_reply({**body, "code": "bad_param"}, status=400))

    error = await chat_error(client)

    assert isinstance(error, InvalidRequest)
    assert error.status_code == 400
    assert error.envelope() == {
        "error": {
            "message": "temperature too high",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "bad_param",
        }
    }


@pytest.mark.anyio
async def test_upstream_wrapped_400_keeps_its_message(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"error": {"message": "bad messages"}}, status=400))

    error = await chat_error(client)

    assert isinstance(error, InvalidRequest)
    assert (error.status_code, error.message) == (400, "bad messages")


@pytest.mark.anyio
async def test_upstream_404_keeps_its_status(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"message": "Model nope does not exist"}, status=404))

    error = await chat_error(client)

    assert isinstance(error, InvalidRequest)
    assert (error.status_code, error.message) == (404, "Model nope does not exist")


@pytest.mark.anyio
async def test_upstream_fastapi_422_keeps_its_status_and_messages(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    detail = [
        {"loc": ["body", "messages"], "msg": "Field required", "type": "missing"},
        {"loc": ["body", "model"], "msg": "Input should be a string", "type": "string_type"},
    ]
    fake_upstream.reply(json_reply({"detail": detail}, status=422))

    error = await chat_error(client)

    assert isinstance(error, InvalidRequest)
    assert error.status_code == 422
    assert error.message == "Field required; Input should be a string"


@pytest.mark.anyio
async def test_upstream_422_with_plain_string_details_keeps_them(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"detail": ["messages must not be empty"]}, status=422))

    error = await chat_error(client)

    assert isinstance(error, InvalidRequest)
    assert (error.status_code, error.message) == (422, "messages must not be empty")


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 402, 403])
async def test_upstream_auth_failure_is_a_502_without_the_key(
    client: CerebrasAPI, fake_upstream: FakeUpstream, status: int
) -> None:
    message = f"Wrong API Key {UPSTREAM_KEY}"
    fake_upstream.reply(json_reply({"message": message, "type": "auth"}, status=status))

    error = await chat_error(client)

    assert isinstance(error, ProviderError)
    assert (error.status_code, error.code) == (502, "upstream_auth_error")
    assert UPSTREAM_KEY not in error.message
    assert UPSTREAM_KEY not in str(error.envelope())


@pytest.mark.anyio
async def test_upstream_429_is_rate_limited_with_retry_headers(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    headers = {"Retry-After": "7", "Retry-After-Ms": "7000", "x-ratelimit-limit-requests-day": "9"}
    fake_upstream.reply(
        json_reply({"message": "Too many tokens", "type": "rate"}, status=429, headers=headers)
    )

    error = await chat_error(client)

    assert isinstance(error, RateLimited)
    assert (error.status_code, error.code, error.message) == (
        429,
        "rate_limit_exceeded",
        "Too many tokens",
    )
    assert error.headers == {"retry-after": "7", "retry-after-ms": "7000"}


@pytest.mark.anyio
async def test_upstream_429_without_retry_headers_has_none(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"message": "slow down"}, status=429))

    error = await chat_error(client)

    assert isinstance(error, RateLimited)
    assert error.headers == {}


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 503])
async def test_upstream_5xx_is_a_502(
    client: CerebrasAPI, fake_upstream: FakeUpstream, status: int
) -> None:
    fake_upstream.reply(json_reply({"message": "internal stuff"}, status=status))

    error = await chat_error(client)

    assert isinstance(error, ProviderError)
    assert (error.status_code, error.code) == (502, "upstream_error")


@pytest.mark.anyio
async def test_upstream_503_keeps_its_retry_hint(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    headers = {"Retry-After": "4", "x-ratelimit-remaining-requests-day": "0"}
    fake_upstream.reply(json_reply({"message": "overloaded"}, status=503, headers=headers))

    error = await chat_error(client)

    assert isinstance(error, ProviderError)
    assert error.headers == {"retry-after": "4"}


@pytest.mark.anyio
async def test_upstream_message_containing_the_key_is_scrubbed(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    message = f"key {UPSTREAM_KEY} may not use this model"
    fake_upstream.reply(json_reply({"message": message}, status=400))

    error = await chat_error(client)

    assert isinstance(error, InvalidRequest)
    assert UPSTREAM_KEY not in error.message
    assert error.message == "key [redacted] may not use this model"


@pytest.mark.anyio
async def test_streaming_request_rejected_before_the_stream_is_mapped(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"message": "slow down"}, status=429))

    with pytest.raises(RateLimited):
        await collect(client)

    assert len(fake_upstream.requests) == 1


@pytest.mark.anyio
async def test_hanging_upstream_times_out_within_the_budget(
    fake_upstream: FakeUpstream, make_client: ClientFactory
) -> None:
    fake_upstream.reply(Reply(hang=True))
    client = make_client(fake_upstream.url, timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError) as info:
            await client.chat(MODEL, MESSAGES)
    finally:
        await client.aclose()

    assert time.monotonic() - started < 0.8
    assert (info.value.status_code, info.value.code) == (502, "upstream_timeout")
    assert len(fake_upstream.requests) == 1


@pytest.mark.anyio
async def test_hanging_stream_open_times_out(
    fake_upstream: FakeUpstream, make_client: ClientFactory
) -> None:
    fake_upstream.reply(Reply(hang=True))
    client = make_client(fake_upstream.url, timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError) as info:
            await collect(client)
    finally:
        await client.aclose()

    assert time.monotonic() - started < 0.8
    assert info.value.code == "upstream_timeout"


@pytest.mark.anyio
async def test_unreachable_upstream_is_a_502(make_client: ClientFactory) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}", timeout=1)
    try:
        with pytest.raises(ProviderError) as info:
            await client.chat(MODEL, MESSAGES)
    finally:
        await client.aclose()

    assert (info.value.status_code, info.value.code) == (502, "upstream_error")


@pytest.mark.anyio
async def test_malformed_json_body_is_a_502(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    headers = {"Content-Type": "application/json"}
    fake_upstream.reply(Reply(headers=headers, body=b'{"id": "chatcmpl-1", "choices": [}'))

    error = await chat_error(client)

    assert isinstance(error, ProviderError)
    assert error.status_code == 502


@pytest.mark.anyio
async def test_non_json_body_is_a_502(client: CerebrasAPI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.reply(Reply(headers={"Content-Type": "text/html"}, body=b"<html>hi</html>"))

    error = await chat_error(client)

    assert isinstance(error, ProviderError)
    assert error.status_code == 502


@pytest.mark.anyio
async def test_dropped_connection_is_a_provider_error(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(Reply(drop_after=0))

    error = await chat_error(client)

    assert isinstance(error, ProviderError)
    assert error.status_code == 502


@pytest.mark.anyio
async def test_mid_stream_cut_gives_the_first_chunks_then_a_provider_error(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(("a", "b", "c"))
    # The cut comes a moment after the second chunk: a reset that overtakes unread data would
    # (rightly) lose that data too, and make the test depend on timing.
    cut = [*chunks[:2], b""]
    fake_upstream.reply(sse_reply(cut, done=False, chunk_delay=0.05, drop_after=3))
    received: list[dict[str, Any]] = []

    with pytest.raises(ProviderError) as info:
        await drain(client.stream_chat(MODEL, MESSAGES), received)

    assert received == chunks[:2]
    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_mid_stream_error_event_is_a_502_after_the_earlier_chunks(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads()
    error_event = {"error": {"message": "boom"}, "status_code": 503}
    fake_upstream.reply(sse_reply([*chunks[:2], error_event, *chunks[2:]]))
    received: list[dict[str, Any]] = []

    with pytest.raises(ProviderError) as info:
        await drain(client.stream_chat(MODEL, MESSAGES), received)

    assert received == chunks[:2]
    assert (info.value.status_code, info.value.code) == (502, "upstream_error")


@pytest.mark.anyio
async def test_mid_stream_rate_limit_event_is_rate_limited(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads()
    error_event = {"error": {"message": "queue full"}, "status_code": 429}
    fake_upstream.reply(sse_reply([chunks[0], error_event]))
    received: list[dict[str, Any]] = []

    with pytest.raises(RateLimited) as info:
        await drain(client.stream_chat(MODEL, MESSAGES), received)

    assert received == chunks[:1]
    assert info.value.message == "queue full"


@pytest.mark.anyio
async def test_closing_the_stream_early_disconnects_the_upstream(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(tuple("abcdefghij"))
    fake_upstream.reply(sse_reply(chunks, chunk_delay=0.05))
    stream = client.stream_chat(MODEL, MESSAGES)

    first = await anext(stream)
    await stream.aclose()

    assert first == [chunks[0]]
    # Poll from a thread: the event loop must keep running to finish closing the socket.
    assert await asyncio.to_thread(fake_upstream.wait_for_disconnects, 1, 2.0)


@pytest.mark.anyio
async def test_client_is_reusable_after_an_error(
    client: CerebrasAPI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(
        json_reply({"message": "no"}, status=500), json_reply(completion_payload("again"))
    )

    await chat_error(client)
    result = await client.chat(MODEL, MESSAGES)

    assert result == completion_payload("again")


@pytest.mark.anyio
async def test_stalled_stream_times_out_between_chunks(
    fake_upstream: FakeUpstream, make_client: ClientFactory
) -> None:
    fake_upstream.reply(sse_reply(chunk_payloads(), chunk_delay=1.0))
    client = make_client(fake_upstream.url, timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError) as info:
            await collect(client)
    finally:
        await client.aclose()

    assert time.monotonic() - started < 0.8
    assert (info.value.status_code, info.value.code) == (502, "upstream_timeout")


@pytest.mark.anyio
async def test_the_sdk_transport_never_retries_on_its_own(fake_upstream: FakeUpstream) -> None:
    fake_upstream.reply(json_reply(completion_payload()))
    client = CerebrasClient(UPSTREAM_KEY, base_url=fake_upstream.url, timeout=2.0)
    try:
        await client.chat(MODEL, MESSAGES)
    finally:
        await client.aclose()

    assert only_request(fake_upstream).headers["x-stainless-retry-count"] == "0"


@pytest.mark.anyio
async def test_the_native_transport_names_the_gateway_as_user_agent(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.reply(json_reply(completion_payload()))
    wire = WireClient(timeout=2.0)
    client = OpenAIWire(
        wire, provider="cerebras", base_url=f"{fake_upstream.url}/v1", api_key=UPSTREAM_KEY
    )
    try:
        await client.chat(MODEL, MESSAGES)
    finally:
        await wire.aclose()

    assert only_request(fake_upstream).headers["user-agent"] == USER_AGENT


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: new connections wait and never complete."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in (*fillers, server):
        sock.close()


@pytest.mark.anyio
async def test_a_connect_timeout_variant_gives_up_connecting_at_its_own_limit(
    make_client: ClientFactory, unanswered_port: int
) -> None:
    client = make_client(f"http://127.0.0.1:{unanswered_port}", timeout=8.0)
    variant = client.with_connect_timeout(0.3)

    started = time.monotonic()
    error = await chat_error(variant)

    assert error.code == "upstream_timeout"
    assert time.monotonic() - started < 4.0  # the variant's 0.3 s, not the client's 5 s


@pytest.mark.anyio
async def test_a_connect_timeout_variant_sends_only_the_request(
    make_client: ClientFactory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload()))
    variant = make_client(fake_upstream.url).with_connect_timeout(1.0)

    await variant.chat(MODEL, MESSAGES)
    await asyncio.sleep(0.2)  # a warm-up request would run in the background

    assert only_request(fake_upstream).path == "/v1/chat/completions"

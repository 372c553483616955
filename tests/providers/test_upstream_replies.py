"""What the gateway reads of an upstream's reply, over both transports and real HTTP: size limits
(decompressed), event framing, redirects and the connection pool."""

import asyncio
import itertools
import json
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from ai_gateway.errors import (
    GatewayError,
    ProviderError,
    UpstreamRedirected,
    UpstreamResponseTooLarge,
)
from ai_gateway.providers.burst import is_last
from ai_gateway.providers.protocol import UpstreamAPI
from ai_gateway.providers.registry import build_registry, upstream_limits
from ai_gateway.providers.upstream_limits import UpstreamLimits
from ai_gateway.providers.wire import OpenAIWire, WireClient
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, Reply, gzip_reply, json_reply, sse_reply
from tests.fakes import MODEL, UPSTREAM_KEY, chat_request, chunk_payloads, completion_payload
from tests.providers.conftest import UpstreamFactory
from tests.streams import drain

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
MIB = 1024 * 1024
BOMB_BYTES = 64 * MIB  # what the bombs below inflate to
SMALL = UpstreamLimits(max_response_bytes=MIB, max_event_bytes=64 * 1024)
# Far below BOMB_BYTES, far above what reading up to SMALL's limits needs.
FLAT_PEAK_BYTES = 16 * MIB


def zeros(total: int) -> Iterator[bytes]:
    """`total` zero bytes, a mebibyte at a time."""
    for _ in range(total // MIB):
        yield bytes(MIB)


@pytest.fixture(scope="module")
def json_bomb() -> Reply:
    """A gzip body of about 64 KiB that inflates to 64 MiB."""
    return gzip_reply(itertools.chain([b'{"id": "'], zeros(BOMB_BYTES)))


@pytest.fixture(scope="module")
def event_bomb() -> Reply:
    """A gzip event stream whose one event inflates to 64 MiB."""
    pieces = itertools.chain([b"data: "], zeros(BOMB_BYTES))
    return gzip_reply(pieces, content_type="text/event-stream", is_chunked=True)


async def collect(client: UpstreamAPI) -> list[dict[str, Any]]:
    """Every chunk of one stream."""
    return [chunk async for arrived in client.stream_chat(MODEL, MESSAGES) for chunk in arrived]


async def peak_while(call: Callable[[], Awaitable[object]]) -> tuple[GatewayError, int]:
    """The GatewayError `call` raises, and the most memory Python held meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(GatewayError) as info:
            await call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info.value, peak


async def warmed(client: UpstreamAPI, upstream: FakeUpstream) -> UpstreamAPI:
    """`client` after one ordinary call, so lazy set-up does not count as the reply's memory."""
    upstream.reply(json_reply(completion_payload()))
    await client.chat(MODEL, MESSAGES)
    return client


def sse_bytes(events: list[Any]) -> bytes:
    """Events as an upstream frames them."""
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)


@pytest.mark.anyio
async def test_a_gzip_bomb_reply_is_a_502_and_memory_stays_flat(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, json_bomb: Reply
) -> None:
    client = await warmed(make_upstream(fake_upstream.url, limits=SMALL), fake_upstream)
    fake_upstream.reply(json_bomb)

    error, peak = await peak_while(lambda: client.chat(MODEL, MESSAGES))

    assert isinstance(error, UpstreamResponseTooLarge)
    assert (error.status_code, error.code) == (502, "upstream_response_too_large")
    assert error.message == f"cerebras sent a response larger than {MIB} bytes"
    assert peak < FLAT_PEAK_BYTES


@pytest.mark.anyio
async def test_a_chunked_gzip_bomb_model_list_is_a_502_and_memory_stays_flat(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    client = await warmed(make_upstream(fake_upstream.url, limits=SMALL), fake_upstream)
    fake_upstream.reply(gzip_reply(zeros(BOMB_BYTES), is_chunked=True))

    error, peak = await peak_while(client.list_models)

    assert isinstance(error, UpstreamResponseTooLarge)
    assert peak < FLAT_PEAK_BYTES


@pytest.mark.anyio
async def test_a_gzip_bomb_event_is_a_502_and_memory_stays_flat(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, event_bomb: Reply
) -> None:
    client = await warmed(make_upstream(fake_upstream.url, limits=SMALL), fake_upstream)
    fake_upstream.reply(event_bomb)

    error, peak = await peak_while(lambda: collect(client))

    assert isinstance(error, UpstreamResponseTooLarge)
    assert error.message == "cerebras sent a stream event larger than 65536 bytes"
    assert peak < FLAT_PEAK_BYTES


@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 400, 500])
async def test_a_body_over_the_limit_is_a_502(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, status: int
) -> None:
    client = make_upstream(fake_upstream.url, limits=SMALL)
    body = json.dumps({"message": "x" * (2 * MIB)}).encode()
    chunks = [body[at : at + 65536] for at in range(0, len(body), 65536)]
    fake_upstream.reply(Reply(status=status, chunks=chunks))

    with pytest.raises(UpstreamResponseTooLarge):
        await client.chat(MODEL, MESSAGES)


@pytest.mark.anyio
@pytest.mark.parametrize("is_gzipped", [False, True])
async def test_a_body_of_exactly_the_limit_is_read(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, is_gzipped: bool
) -> None:
    payload = completion_payload(text="y" * 100_000)
    body = json.dumps(payload).encode()
    exact = make_upstream(fake_upstream.url, limits=UpstreamLimits(max_response_bytes=len(body)))
    short = make_upstream(
        fake_upstream.url, limits=UpstreamLimits(max_response_bytes=len(body) - 1)
    )
    reply = gzip_reply([body], is_chunked=True) if is_gzipped else json_reply(payload)
    fake_upstream.reply(reply, reply)

    assert await exact.chat(MODEL, MESSAGES) == payload
    with pytest.raises(UpstreamResponseTooLarge):
        await short.chat(MODEL, MESSAGES)


@pytest.mark.anyio
@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_a_deflated_reply_is_inflated(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, wbits: int
) -> None:
    payload = completion_payload(text="deflated " * 1000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = compressor.compress(json.dumps(payload).encode()) + compressor.flush()
    headers = {"Content-Type": "application/json", "Content-Encoding": "deflate"}
    fake_upstream.reply(Reply(headers=headers, body=body))

    assert await make_upstream(fake_upstream.url, limits=SMALL).chat(MODEL, MESSAGES) == payload


@pytest.mark.anyio
async def test_a_gzipped_stream_arrives_whole(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(tuple("abcdefgh"))
    raw = sse_bytes(chunks) + b"data: [DONE]\n\n"
    fake_upstream.reply(gzip_reply([raw], content_type="text/event-stream", is_chunked=True))

    assert await collect(make_upstream(fake_upstream.url, limits=SMALL)) == chunks


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("encoding", "body"),
    [("br", b"\x1b\x00\x00"), ("gzip", b"\x1f\x8b\x08\x00 this is not gzip")],
    ids=["unasked-encoding", "corrupt-gzip"],
)
async def test_a_body_that_does_not_decode_is_a_502(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, encoding: str, body: bytes
) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    fake_upstream.reply(Reply(headers=headers, body=body))

    with pytest.raises(ProviderError) as info:
        await make_upstream(fake_upstream.url).chat(MODEL, MESSAGES)

    assert (info.value.status_code, info.value.code) == (502, "upstream_error")


@pytest.mark.anyio
@pytest.mark.parametrize("is_streaming", [False, True])
async def test_a_content_length_over_the_limit_fails_without_reading_the_body(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, is_streaming: bool
) -> None:
    # The upstream declares 10 GB, sends one byte and waits: only the header can end the call.
    client = make_upstream(fake_upstream.url, limits=SMALL, timeout=5.0)
    fake_upstream.reply(
        Reply(status=400 if is_streaming else 200, body=b"{", content_length=10**10)
    )
    started = time.monotonic()

    with pytest.raises(UpstreamResponseTooLarge):
        await (collect(client) if is_streaming else client.chat(MODEL, MESSAGES))

    assert time.monotonic() - started < 1.0
    assert await asyncio.to_thread(fake_upstream.wait_for_disconnects, 1, 2.0)


@pytest.mark.anyio
async def test_an_event_longer_than_a_reader_line_arrives_whole(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    # 600 KiB on one line: past aiohttp's line limit, within the default event limit.
    chunks = chunk_payloads(("x" * 600_000, "end"))
    fake_upstream.reply(sse_reply(chunks))

    assert await collect(make_upstream(fake_upstream.url)) == chunks


@pytest.mark.anyio
async def test_an_event_over_the_limit_before_the_first_chunk_is_a_502(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(("x" * 200_000,))
    fake_upstream.reply(sse_reply(chunks[1:]))  # the long event first
    received: list[dict[str, Any]] = []

    with pytest.raises(UpstreamResponseTooLarge) as info:
        await drain(
            make_upstream(fake_upstream.url, limits=SMALL).stream_chat(MODEL, MESSAGES), received
        )

    assert received == []
    assert info.value.message == "cerebras sent a stream event larger than 65536 bytes"


@pytest.mark.anyio
@pytest.mark.parametrize("is_one_read", [True, False])
async def test_an_event_over_the_limit_after_the_first_chunk_ends_the_stream_with_a_502(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, is_one_read: bool
) -> None:
    chunks = chunk_payloads(("a", "x" * 200_000, "b"))
    # The long event in one chunk of the reply, or spread over many small ones.
    long_event = sse_bytes([chunks[2]])
    pieces = (
        [long_event]
        if is_one_read
        else [long_event[at : at + 4096] for at in range(0, len(long_event), 4096)]
    )
    fake_upstream.reply(sse_reply([*chunks[:2], *pieces, *chunks[3:]]))
    received: list[dict[str, Any]] = []

    with pytest.raises(UpstreamResponseTooLarge):
        await drain(
            make_upstream(fake_upstream.url, limits=SMALL).stream_chat(MODEL, MESSAGES), received
        )

    assert received == chunks[:2]


FRAMINGS: list[Callable[[bytes], bytes]] = [
    lambda data: b"data: " + data + b"\r\n\r\n",
    lambda data: b"data: " + data + b"\n\n",
    lambda data: b"data: " + data + b"\r\r",
    lambda data: b"data:" + data[:1] + b"\ndata: " + data[1:] + b"\n\n",  # {\n"id": ...
    lambda data: b": keep-alive\n\ndata: " + data + b"\n\n\n",
]


@pytest.mark.anyio
async def test_events_split_across_reads_with_any_line_ends_arrive_whole(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(("a", "b", "c"))
    events = [
        frame(json.dumps(chunk).encode())
        for frame, chunk in zip(itertools.cycle(FRAMINGS), chunks, strict=False)
    ]
    raw = b"".join(events) + b"data: [DONE]\n\n"
    # Three bytes a read: separators and CRLF pairs split across reads.
    fake_upstream.reply(sse_reply([raw[at : at + 3] for at in range(0, len(raw), 3)], done=False))

    assert await collect(make_upstream(fake_upstream.url)) == chunks


@pytest.mark.anyio
async def test_nothing_after_done_is_read_as_an_event(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    chunks = chunk_payloads(("a",))
    trailer = b"data: " + b"x" * 200_000 + b"\n\n"
    fake_upstream.reply(sse_reply([*chunks, b"data: [DONE]\n\n", trailer], done=False))

    assert await collect(make_upstream(fake_upstream.url, limits=SMALL)) == chunks


@pytest.mark.anyio
@pytest.mark.parametrize("is_done_last", [False, True])
async def test_the_native_wire_reads_a_last_event_without_its_blank_line(
    fake_upstream: FakeUpstream, is_done_last: bool
) -> None:
    # The SDK's decoder drops such an event; the native reader always kept it.
    chunks = chunk_payloads(("a",))
    raw = sse_bytes(chunks)[:-2] + (b"\n\ndata: [DONE]" if is_done_last else b"")
    fake_upstream.reply(sse_reply([raw], done=False))
    wire = WireClient(timeout=2.0)
    try:
        client = OpenAIWire(wire, provider="groq", base_url=f"{fake_upstream.url}/v1", api_key="")
        assert await collect(client) == chunks
    finally:
        await wire.aclose()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[FakeUpstream]:
    """A second upstream, on another port, that a redirect points to."""
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", ["chat", "stream", "models"])
async def test_a_redirect_is_a_502_and_is_never_followed(
    make_upstream: UpstreamFactory,
    fake_upstream: FakeUpstream,
    elsewhere: FakeUpstream,
    status: int,
    call: str,
) -> None:
    elsewhere.reset()
    elsewhere.reply_with(lambda _: json_reply(completion_payload("from elsewhere")))
    headers = {"Location": f"{elsewhere.url}/v1/chat/completions"}
    fake_upstream.reply(Reply(status=status, headers=headers))
    client = make_upstream(fake_upstream.url)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "chat": lambda: client.chat(MODEL, MESSAGES),
        "stream": lambda: collect(client),
        "models": client.list_models,
    }

    with pytest.raises(ProviderError) as info:
        await calls[call]()

    assert type(info.value) is UpstreamRedirected
    assert info.value.envelope()["error"] == {
        "message": f"cerebras returned HTTP {status}; redirects are not followed",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_error",
    }
    assert len(fake_upstream.requests) == 1
    assert elsewhere.requests == []


@pytest.mark.anyio
async def test_the_pool_opens_at_most_max_connections(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream
) -> None:
    # Replies that never come hold both connections: the third call can only wait.
    fake_upstream.reply_with(lambda _: Reply(hang=True))
    client = make_upstream(fake_upstream.url, limits=UpstreamLimits(max_connections=2), timeout=5.0)
    calls = [asyncio.create_task(client.chat(MODEL, MESSAGES)) for _ in range(3)]
    try:
        assert await asyncio.to_thread(fake_upstream.wait_for_requests, 2, 2.0)
        assert not await asyncio.to_thread(fake_upstream.wait_for_requests, 3, 0.3)
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


def test_the_registry_takes_its_limits_from_the_settings() -> None:
    settings = make_settings(
        upstream_max_connections=7, max_upstream_response_bytes=1000, max_upstream_event_bytes=10
    )

    assert upstream_limits(settings) == UpstreamLimits(
        max_connections=7, max_response_bytes=1000, max_event_bytes=10
    )


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["native", "sdk"])
async def test_every_client_the_registry_builds_reads_within_the_configured_limit(
    fake_upstream: FakeUpstream, transport: str
) -> None:
    settings = make_settings(
        cerebras_api_key=UPSTREAM_KEY,
        cerebras_base_url=fake_upstream.url,
        cerebras_client=transport,
        max_upstream_response_bytes=4096,
    )
    environ = {
        "OPENAI_API_KEY": "sk-openai-test-0123456789",
        "OPENAI_BASE_URL": f"{fake_upstream.url}/v1",
    }
    big = json_reply(completion_payload(text="z" * 8192))
    fake_upstream.reply(big, big)
    registry = build_registry(settings, environ=environ)
    try:
        for name in ("cerebras", "openai"):
            with pytest.raises(UpstreamResponseTooLarge):
                await registry.provider(name).chat_completions(chat_request())
    finally:
        await registry.aclose()

    assert len(fake_upstream.requests) == 2


@pytest.mark.anyio
async def test_events_that_arrive_together_go_on_together_the_first_alone_the_end_marked(
    fake_upstream: FakeUpstream,
) -> None:
    chunks = chunk_payloads(tuple("abcdef"))
    body = sse_bytes(chunks) + b"data: [DONE]\n\n"
    fake_upstream.reply(Reply(headers={"Content-Type": "text/event-stream"}, body=body))
    wire = WireClient(timeout=2.0)
    client = OpenAIWire(wire, provider="cerebras", base_url=f"{fake_upstream.url}/v1", api_key="k")
    try:
        bursts = [arrived async for arrived in client.stream_chat(MODEL, MESSAGES)]
    finally:
        await wire.aclose()

    assert bursts == [chunks[:1], chunks[1:]]
    assert [is_last(burst) for burst in bursts] == [False, True]

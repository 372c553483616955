"""SSE framing and EventStreamResponse driven directly as an ASGI app."""

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest
from starlette.types import Message

from ai_gateway.api.record import RequestRecord
from ai_gateway.api.streaming import (
    DONE,
    SEND_TIMEOUT,
    EventStreamResponse,
    encode_chunk,
    encode_error,
    encode_event,
    event_frames,
)
from ai_gateway.errors import InvalidRequest, ProviderError
from ai_gateway.providers.burst import Burst
from ai_gateway.schemas import ChatCompletionChunk

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


async def never_disconnects() -> dict[str, Any]:
    """An ASGI receive for a client that stays connected."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def streamed(
    frames: AsyncGenerator[bytes, None],
    *,
    headers: dict[str, str] | None = None,
    close: Any = None,
    send_timeout_s: float = 5.0,
    record: RequestRecord | None = None,
) -> EventStreamResponse:
    """An EventStreamResponse over `frames`."""
    return EventStreamResponse(
        frames,
        headers=headers or {},
        close=close,
        record=record or RequestRecord("req", "POST", "/v1/chat/completions"),
        send_timeout_s=send_timeout_s,
    )


def test_encode_event_is_one_complete_sse_event() -> None:
    assert encode_event({"a": 1, "b": [None, "é"]}) == 'data: {"a":1,"b":[null,"é"]}\n\n'.encode()


def test_encode_error_is_the_envelope_plus_status_code() -> None:
    assert encode_error(ProviderError("boom")) == (
        b'data: {"error":{"message":"boom","type":"upstream_error","param":null,'
        b'"code":"upstream_error"},"status_code":502}\n\n'
    )


def test_encode_error_keeps_param_code_and_status_of_the_error() -> None:
    error = InvalidRequest("bad", param="messages", code="x", status=422)

    assert encode_error(error) == (
        b'data: {"error":{"message":"bad","type":"invalid_request_error","param":"messages",'
        b'"code":"x"},"status_code":422}\n\n'
    )


def test_done_frame() -> None:
    assert DONE == b"data: [DONE]\n\n"


def chunk(text: str, *, usage: bool = False) -> ChatCompletionChunk:
    """A normalised chunk with one content delta (or the usage chunk)."""
    data: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    if usage:
        data |= {
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    else:
        data["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return ChatCompletionChunk(data)


@pytest.mark.anyio
async def test_each_burst_of_chunks_leaves_in_one_write_and_done_ends_the_body() -> None:
    closed: list[bool] = []

    async def rest() -> AsyncGenerator[list[ChatCompletionChunk], None]:
        try:
            yield [chunk("b"), chunk("c"), chunk("", usage=True)]
        finally:
            closed.append(True)

    record = RequestRecord("req", "POST", "/v1/chat/completions")
    frames = event_frames([chunk("a")], rest(), include_usage=False, record=record)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = streamed(frames, headers={"x-test": "1"}, record=record)
    with anyio.fail_after(1):
        await response(SCOPE, never_disconnects, send)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    assert (b"x-test", b"1") in sent[0]["headers"]
    a, b, c = (encode_chunk(chunk(text), include_usage=False) for text in "abc")
    assert sent[1:] == [
        {"type": "http.response.body", "body": a, "more_body": True},
        {"type": "http.response.body", "body": b + c, "more_body": True},
        {"type": "http.response.body", "body": DONE, "more_body": False},
    ]
    assert closed == [True]
    assert record.chunks == 4
    assert record.usage is not None
    assert record.usage.completion_tokens == 2


@pytest.mark.anyio
async def test_a_burst_marked_last_carries_done_and_the_stream_runs_to_its_end() -> None:
    finished: list[bool] = []

    async def rest() -> AsyncGenerator[list[ChatCompletionChunk], None]:
        yield Burst([chunk("b"), chunk("c")], is_last=True)
        finished.append(True)  # the upstream read to its end: its connection is reused

    record = RequestRecord("req", "POST", "/v1/chat/completions")
    frames = event_frames([chunk("a")], rest(), include_usage=False, record=record)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(1):
        await streamed(frames, record=record)(SCOPE, never_disconnects, send)

    a, b, c = (encode_chunk(chunk(text), include_usage=False) for text in "abc")
    assert sent[1:] == [
        {"type": "http.response.body", "body": a, "more_body": True},
        {"type": "http.response.body", "body": b + c + DONE, "more_body": False},
    ]
    assert finished == [True]


@pytest.mark.anyio
async def test_pieces_that_arrive_apart_are_sent_apart_in_order() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        for frame in (b"data: 1\n\n", b"data: 2\n\n", DONE):
            yield frame
            await asyncio.sleep(0.01)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(1):
        await streamed(frames())(SCOPE, never_disconnects, send)

    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", DONE]
    assert [m.get("more_body") for m in sent[1:]] == [True, True, False]


@pytest.mark.anyio
async def test_nothing_is_read_ahead_of_a_client_that_is_slow_to_take_a_write() -> None:
    pulled = 0

    async def frames() -> AsyncGenerator[bytes, None]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"data: x\n\n"

    held = asyncio.Event()
    release = asyncio.Event()
    bodies = 0

    async def slow_send(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies == 2:
                held.set()
                await release.wait()  # the server's flow control holds the second write

    task = asyncio.ensure_future(streamed(frames())(SCOPE, never_disconnects, slow_send))
    with anyio.fail_after(1):
        await held.wait()
        await asyncio.sleep(0.05)
        assert pulled == 2
        release.set()
        await task

    assert pulled == 100


@pytest.mark.anyio
async def test_pieces_that_stop_without_done_still_end_the_body() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"data: 1\n\n"

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(1):
        await streamed(frames())(SCOPE, never_disconnects, send)

    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [
        (b"data: 1\n\n", True),
        (b"", False),
    ]


@pytest.mark.anyio
async def test_a_cancelled_response_closes_a_blocked_frame_generator_and_the_upstream() -> None:
    """The dispatch cancels the request when its caller leaves; the stream ends with it."""
    blocked = asyncio.Event()
    closed: list[bool] = []
    released: list[bool] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
            blocked.set()
            await asyncio.Event().wait()  # an upstream that never sends the next chunk
            yield b"data: never\n\n"
        finally:
            closed.append(True)

    async def release() -> None:
        released.append(True)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.ensure_future(streamed(frames(), close=release)(SCOPE, never_disconnects, send))
    with anyio.fail_after(1):
        await blocked.wait()
        task.cancel()
        await asyncio.wait({task})

    assert task.cancelled()
    assert closed == [True]
    assert released == [True]
    assert sent[1] == {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}


@pytest.mark.anyio
async def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout() -> None:
    closed = asyncio.Event()
    released: list[bool] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            for _ in range(1000):
                yield b"data: x\n\n"
        finally:
            closed.set()

    async def release() -> None:
        released.append(True)

    bodies = 0

    async def stuck_after_first_write(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies > 1:
                await asyncio.Event().wait()  # the client stopped reading

    record = RequestRecord("req", "POST", "/v1/chat/completions")
    response = streamed(frames(), close=release, send_timeout_s=0.2, record=record)
    with anyio.fail_after(3):
        await response(SCOPE, never_disconnects, stuck_after_first_write)

    assert closed.is_set()
    assert released == [True]
    assert record.error_code == SEND_TIMEOUT


@pytest.mark.anyio
async def test_a_slow_upstream_is_not_a_send_timeout() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        for frame in (b"data: 1\n\n", b"data: 2\n\n"):
            await asyncio.sleep(0.15)
            yield frame

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(2):
        await streamed(frames(), send_timeout_s=0.1)(SCOPE, never_disconnects, send)

    assert b"".join(m.get("body", b"") for m in sent) == b"data: 1\n\ndata: 2\n\n"


@pytest.mark.anyio
async def test_the_upstream_is_released_even_when_the_response_never_starts() -> None:
    released: list[bool] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"data: x\n\n"

    async def release() -> None:
        released.append(True)

    async def client_gone(message: Message) -> None:
        raise OSError("client gone")

    response = streamed(frames(), close=release)
    with pytest.raises(OSError, match="client gone"):
        await response(SCOPE, never_disconnects, client_gone)

    assert released == [True]

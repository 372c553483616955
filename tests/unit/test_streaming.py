"""SSE framing and EventStreamResponse driven directly as an ASGI app."""

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest
from starlette.types import Message

from ai_gateway.api.streaming import DONE, EventStreamResponse, encode_error, encode_event
from ai_gateway.errors import InvalidRequest, ProviderError

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


async def never_disconnects() -> dict[str, Any]:
    """An ASGI receive for a client that stays connected."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


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


@pytest.mark.anyio
async def test_the_first_frame_leaves_alone_and_the_ready_rest_in_one_write() -> None:
    closed: list[bool] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            for frame in (b"data: 1\n\n", b"data: 2\n\n", DONE):
                yield frame
        finally:
            closed.append(True)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = EventStreamResponse(frames(), headers={"x-test": "1"})
    with anyio.fail_after(1):
        await response(SCOPE, never_disconnects, send)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    assert (b"x-test", b"1") in sent[0]["headers"]
    assert sent[1:] == [
        {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True},
        {"type": "http.response.body", "body": b"data: 2\n\n" + DONE, "more_body": False},
    ]
    assert closed == [True]


@pytest.mark.anyio
async def test_frames_that_arrive_apart_are_sent_apart_in_order() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        for frame in (b"data: 1\n\n", b"data: 2\n\n"):
            yield frame
            await asyncio.sleep(0.01)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(1):
        await EventStreamResponse(frames(), headers={})(SCOPE, never_disconnects, send)

    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert [m.get("more_body") for m in sent[1:]] == [True, True, False]


@pytest.mark.anyio
async def test_client_disconnect_closes_a_blocked_frame_generator_promptly() -> None:
    first_frame_sent = asyncio.Event()
    blocked = asyncio.Event()
    closed: list[bool] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
            blocked.set()
            await asyncio.Event().wait()  # an upstream that never sends the next chunk
            yield b"data: never\n\n"
        finally:
            closed.append(True)

    receives: list[str] = []

    async def receive() -> dict[str, Any]:
        if not receives:
            receives.append("http.request")
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_frame_sent.wait()
        await blocked.wait()
        receives.append("http.disconnect")
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body"):
            first_frame_sent.set()

    response = EventStreamResponse(frames(), headers={})
    with anyio.fail_after(1):
        await response(SCOPE, receive, send)

    assert closed == [True]
    assert receives == ["http.request", "http.disconnect"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}


@pytest.mark.anyio
async def test_a_slow_client_that_goes_away_ends_the_response_and_closes_the_frames() -> None:
    closed = asyncio.Event()

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            for _ in range(1000):  # far more than the read-ahead queue holds
                yield b"data: x\n\n"
        finally:
            closed.set()

    bodies = 0

    async def stuck_after_first_write(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies > 1:
                await asyncio.Event().wait()  # the client stopped reading

    async def leaves_soon() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    response = EventStreamResponse(frames(), headers={})
    task = asyncio.ensure_future(response(SCOPE, leaves_soon, stuck_after_first_write))
    done, _ = await asyncio.wait({task}, timeout=3)
    task.cancel()

    assert task in done  # ended by the disconnect, not still waiting
    assert closed.is_set()


@pytest.mark.anyio
async def test_the_upstream_is_released_even_when_the_response_never_starts() -> None:
    released: list[bool] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"data: x\n\n"

    async def release() -> None:
        released.append(True)

    async def client_gone(message: Message) -> None:
        raise OSError("client gone")

    response = EventStreamResponse(frames(), headers={}, close=release)
    with pytest.raises(OSError, match="client gone"):
        await response(SCOPE, never_disconnects, client_gone)

    assert released == [True]

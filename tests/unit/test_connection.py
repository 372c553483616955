"""HeaderLimitedProtocol fed directly: what a plain loopback socket cannot force, and each
write it makes."""

import asyncio
import time
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from ai_gateway.api.connection import ARRIVED, HOLD_HEAD, LEAVE, HeaderLimitedProtocol, Leave

MAX_HEADER_BYTES = 1024
ENVELOPE = {
    "error": {
        "message": "The request line and headers are over the limit of 1024 bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_header_fields_too_large",
    }
}


class RecordingTransport(asyncio.Transport):
    """Keeps what is written; like TLS when it cannot half-close."""

    def __init__(self, *, can_write_eof: bool) -> None:
        super().__init__()
        self.written = b""
        self.writes: list[bytes] = []
        self.is_eof_written = False
        self.is_closed = False
        self.is_reading = True
        self._can_write_eof = can_write_eof

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)
        self.writes.append(bytes(data))

    def can_write_eof(self) -> bool:
        return self._can_write_eof

    def write_eof(self) -> None:
        self.is_eof_written = True

    def is_closing(self) -> bool:
        return self.is_closed

    def close(self) -> None:
        self.is_closed = True

    def pause_reading(self) -> None:
        self.is_reading = False

    def resume_reading(self) -> None:
        self.is_reading = True


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


def connect(
    transport: RecordingTransport, *, header_timeout_s: float = 5.0, app: Any = ok
) -> HeaderLimitedProtocol:
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    protocol = HeaderLimitedProtocol(
        config,
        ServerState(),
        {},
        max_header_bytes=MAX_HEADER_BYTES,
        header_timeout_s=header_timeout_s,
    )
    protocol.connection_made(transport)
    return protocol


def expected_431() -> bytes:
    body = orjson.dumps(ENVELOPE)
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body


@pytest.mark.anyio
async def test_a_431_is_followed_by_a_half_close_and_later_bytes_are_dropped() -> None:
    transport = RecordingTransport(can_write_eof=True)
    protocol = connect(transport)

    protocol.data_received(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES)
    protocol.data_received(b"a" * 10_000 + b"\r\n\r\n")

    assert transport.written == expected_431()
    assert transport.is_eof_written
    assert not transport.is_closed  # the header timer or the client ends it
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_431_for_the_next_request_on_a_kept_alive_connection_still_times_out() -> None:
    transport = RecordingTransport(can_write_eof=True)
    protocol = connect(transport, header_timeout_s=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)  # answered; the connection idles, untimed

    protocol.data_received(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES)
    await asyncio.sleep(0.1)

    assert transport.written.endswith(expected_431())
    assert transport.is_closed
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_without_half_close_a_431_is_followed_by_a_close() -> None:
    transport = RecordingTransport(can_write_eof=False)
    protocol = connect(transport)

    protocol.data_received(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES)

    assert transport.written == expected_431()
    assert transport.is_closed
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_malformed_request_over_the_limit_is_still_the_parsers_400() -> None:
    transport = RecordingTransport(can_write_eof=True)
    protocol = connect(transport)

    protocol.data_received(b"GET / HTTP/1.1\r\nno colon\r\n" + b"a" * MAX_HEADER_BYTES)

    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert transport.written.endswith(b"\r\n\r\nInvalid HTTP request received.")
    assert transport.is_closed
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_request_is_timed_from_the_first_read_of_its_header_block() -> None:
    arrivals: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        arrivals.append(scope.get(ARRIVED))
        await ok(scope, receive, send)

    transport = RecordingTransport(can_write_eof=True)
    protocol = connect(transport, app=app)
    before = time.perf_counter()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Slow: ")
    await asyncio.sleep(0.05)
    completed = time.perf_counter()
    protocol.data_received(b"1\r\n\r\n")
    await asyncio.sleep(0.01)
    # Two requests in one read: the second waits for the first's answer (pipelined), and is
    # timed from when it starts (no stamp).
    protocol.data_received(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)

    first, second, third = arrivals
    assert first is not None
    assert before <= first < completed
    assert second is not None
    assert completed < second
    assert third is None
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    protocol.connection_lost(None)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def heads_held(*, raises: bool = False, streams: bool = False) -> Any:
    """An app that holds its head as the gateway's dispatch does (streaming, or failing after
    the head, when asked)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope[HOLD_HEAD]()
        if streams:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"b", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if raises:
            raise RuntimeError("after the head")
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def holding(app: Any) -> tuple[RecordingTransport, HeaderLimitedProtocol]:
    """A connection serving `app`, its responses without uvicorn's default headers."""
    transport = RecordingTransport(can_write_eof=True)
    protocol = connect(transport, app=app)
    protocol.server_state.default_headers = []
    return transport, protocol


@pytest.mark.anyio
async def test_a_held_head_leaves_with_the_body_in_one_write() -> None:
    transport, protocol = holding(heads_held())

    protocol.data_received(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")  # (pipelined)
    await asyncio.sleep(0.01)

    assert transport.writes == [HEAD + b"{}", HEAD + b"{}"]
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_held_head_leaves_with_a_stream_s_first_part_and_the_rest_as_it_comes() -> None:
    transport, protocol = holding(heads_held(streams=True))

    protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)

    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert transport.writes == [head + b"1\r\na\r\n", b"1\r\nb\r\n", b"0\r\n\r\n"]
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_head_response_s_held_head_leaves_at_its_end() -> None:
    transport, protocol = holding(heads_held())

    protocol.data_received(b"HEAD / HTTP/1.1\r\n\r\n")  # (no body is written for a HEAD)
    await asyncio.sleep(0.01)
    protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)

    assert transport.writes == [HEAD, HEAD + b"{}"]
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_held_head_is_written_before_the_connection_closes() -> None:
    transport, protocol = holding(heads_held(raises=True))

    protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)

    assert transport.writes == [HEAD]
    assert transport.is_closed
    protocol.connection_lost(None)


def leave_noted(left: list[str], *, answers: bool) -> Any:
    """An app that asks to hear of its caller leaving, then answers, or waits for the leave."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        def action() -> None:
            left.append(scope["path"])
            gone.set()

        leave = scope[LEAVE]
        assert isinstance(leave, Leave)
        leave.watch(action)
        if answers:
            await ok(scope, receive, send)
            return
        await gone.wait()

    return app


def watching_leaves(
    *, answers: bool
) -> tuple[list[str], RecordingTransport, HeaderLimitedProtocol]:
    """A connection serving `leave_noted`, and the paths of the requests told of a leave."""
    left: list[str] = []
    transport = RecordingTransport(can_write_eof=True)
    return left, transport, connect(transport, app=leave_noted(left, answers=answers))


@pytest.mark.anyio
async def test_a_request_is_told_once_when_its_caller_leaves_before_its_answer() -> None:
    left, _, protocol = watching_leaves(answers=False)

    protocol.data_received(b"GET /waits HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)
    protocol.connection_lost(None)
    protocol.cycle.scope[LEAVE]()  # (told once: a second call does nothing)

    assert left == ["/waits"]


@pytest.mark.anyio
async def test_a_caller_who_leaves_after_the_answer_is_no_leave() -> None:
    left, transport, protocol = watching_leaves(answers=True)

    protocol.data_received(b"GET /answered HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)
    protocol.connection_lost(None)

    assert transport.written.startswith(b"HTTP/1.1 200 OK")
    assert left == []


@pytest.mark.anyio
async def test_a_large_body_read_whole_leaves_the_connection_reading() -> None:
    left, transport, protocol = watching_leaves(answers=False)
    body = b"x" * 100_000  # over uvicorn's 64 KiB: it pauses reading until the app reads

    protocol.data_received(b"POST /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + body)
    await asyncio.sleep(0.01)

    assert transport.is_reading  # so the caller's leave is seen while the request is served
    protocol.connection_lost(None)
    assert left == ["/big"]


def test_a_leave_before_the_request_watches_is_acted_on_when_it_does() -> None:
    leave, acted = Leave(), []
    leave()  # the caller left before the request asked to hear of it

    leave.watch(lambda: acted.append("cancel"))
    leave()

    assert acted == ["cancel"]  # at once, and once

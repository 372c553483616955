"""The HTTP/1.1 connection: uvicorn's httptools protocol with a size and a time limit on headers,
a response's head written with its first body bytes, and a request told when its caller leaves."""

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import orjson
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ai_gateway.config import constants
from ai_gateway.config.settings import Settings
from ai_gateway.errors import InvalidRequest

log = structlog.get_logger(__name__)

HEADER_TOO_LARGE = 431
ARRIVED = "ai_gateway.arrived"
"""The scope key holding when the request's first byte was read (`time.perf_counter()`): the
start of the times the response reports (Server-Timing, the log line, the ledger)."""
HOLD_HEAD = "ai_gateway.hold_head"
"""The scope key holding a callable that makes the connection keep the response's head (its next
write) until the first body bytes, to write both at once."""
LEAVE = "ai_gateway.leave"
"""The scope key holding the request's `Leave`: what the connection calls when it is lost before
the request's response has ended."""


class Leave:
    """A request's notice that its caller has gone: the request says what to do (`watch`), the
    connection calls it once, if it is lost while the response is unfinished (a leave before
    `watch` is kept, and acted on when `watch` comes).

    Without it, a request learns of a leave by reading `receive` until `http.disconnect`, which
    takes a task per request, woken again when the response ends; this takes two slots.
    """

    __slots__ = ("action", "has_left")

    def __init__(self) -> None:
        self.action: Callable[[], None] | None = None
        self.has_left = False

    def watch(self, action: Callable[[], None]) -> None:
        """Do `action` when the caller leaves (at once, if it already has)."""
        if self.has_left:
            action()
        else:
            self.action = action

    def __call__(self) -> None:
        """The caller has gone: do what the request asked, once."""
        self.has_left = True
        action, self.action = self.action, None
        if action is not None:
            action()

    def stop(self) -> None:
        """Nothing more to do on a leave (the request has ended)."""
        self.action = None


class HeadHoldingTransport:
    """The connection's transport, able to hold a response's head for its first body bytes.

    uvicorn writes a response's head and each part of its body separately: two writes (two
    system calls, two packets, the caller woken twice) for a JSON answer or a stream's first
    event, which the gateway always sends at once after the head. Once `hold_head` is called,
    the next write is kept and goes out with the following one; the end of the response, or of
    the connection, sends whatever is still held (a HEAD response has no body to carry it).
    """

    __slots__ = ("_held", "_holding", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._holding = False
        self._held: bytes | None = None

    def hold_head(self) -> None:
        """Keep the next write (the head) for the one after it."""
        self._holding = True

    def write(self, data: bytes) -> None:
        """Write `data`, after what is held; or hold it, if it is the head."""
        held = self._held
        if held is not None:
            self._held = None
            self.transport.write(held + data)
        elif self._holding:
            self._holding = False
            self._held = bytes(data)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Write what is held, and hold nothing more."""
        self._holding = False
        held, self._held = self._held, None
        if held is not None and not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        """Close, once what is held is written."""
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class HeaderLimitedProtocol(HttpToolsProtocol):
    """httptools' protocol that counts and times each header block before the parser sees it.

    httptools has no header limit and its work grows faster than the header (a 50 MB header
    held the event loop for seconds), so the bytes are counted here, before `feed_data`.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int = constants.DEFAULT_MAX_HEADER_BYTES,
        header_timeout_s: float = constants.DEFAULT_HEADER_TIMEOUT_S,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_header_bytes = max_header_bytes
        self._header_timeout_s = header_timeout_s
        self._reading_headers = True
        self._header_bytes = 0  # of the open header block; 0 once its headers are complete
        self._header_timer: asyncio.TimerHandle | None = None
        self._is_rejected = False
        self._arrived: float | None = None  # the open header block's first read

    # Narrowed from BaseTransport exactly as uvicorn's own protocol does.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first header block; writes go through a head holder."""
        super().connection_made(transport)
        self._holder = HeadHoldingTransport(transport)
        self.transport = cast(asyncio.Transport, self._holder)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock; tell a request whose response is unfinished that its caller left."""
        self._cancel_header_timer()
        super().connection_lost(exc)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            leave = cycle.scope.get(LEAVE)
            if isinstance(leave, Leave):
                leave()

    def on_response_complete(self) -> None:
        """Whatever is held leaves with the end of the response (a HEAD response's head)."""
        self._holder.flush()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        """Count header bytes, then parse; a block that outgrows the limit is never parsed."""
        if self._reading_headers:
            if self._arrived is None:
                self._arrived = time.perf_counter()
            # A block pipelined behind a request in the same read is counted from the next
            # read: it can pass the limit by at most one read before it is caught.
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self._receive_past_limit(data)
                return
        super().data_received(data)
        if self._header_bytes and self._header_timer is None:
            # The next request on a kept-alive connection has begun: its clock starts now.
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        """The header block is in: what follows is the body, untimed and uncounted here. The
        request's scope notes when its first byte was read (one read with the end of the request
        before it: when its headers are complete); a request pipelined behind an answer in
        progress waits for it, and is timed from when it starts, so it has no stamp."""
        self._reading_headers = False
        self._header_bytes = 0
        self._cancel_header_timer()
        scope = cast(dict[str, Any], self.scope)
        if not self._is_answering():
            scope[ARRIVED] = self._arrived or time.perf_counter()
        scope[HOLD_HEAD] = self._holder.hold_head
        scope[LEAVE] = Leave()
        self._arrived = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """Any byte after a whole request belongs to the next header block. Reading goes on
        (uvicorn pauses it while more than 64 KiB of body wait, and resumes it only when the
        app reads `receive` or the response ends), so that a caller who leaves while its
        request is served is seen; a request pipelined behind it pauses reading again."""
        self._reading_headers = True
        super().on_message_complete()
        if not self.pipeline:
            self.flow.resume_reading()

    def _receive_past_limit(self, data: bytes) -> None:
        """Parse only the part of `data` within the limit; reject if the headers end later."""
        if self._is_rejected:
            return  # the 431 is sent: later bytes are read and dropped until the close
        fits = len(data) - (self._header_bytes - self._max_header_bytes)
        super().data_received(data[:fits])
        if self.transport.is_closing():
            return  # the parser rejected the request itself (400)
        if self._header_bytes > self._max_header_bytes:  # the header block is still open
            self._reject()
            return
        self.data_received(data[fits:])  # the body, or a pipelined request, counted afresh

    def _reject(self) -> None:
        """Answer 431 and end the connection without reading the rest of the header."""
        self._is_rejected = True
        log.info("request_header_too_large", client=self.client and self.client[0])
        if self._is_answering():
            # A pipelined request: its 431 cannot overtake the answer in progress, so that
            # answer is the connection's last.
            self.cycle.keep_alive = False
            return
        self.transport.write(header_too_large_response(self._max_header_bytes, self.server_state))
        if self.transport.can_write_eof():
            # Half-close: a full close with the client's bytes unread sends a reset, which can
            # destroy the 431 before the client reads it. The header timer ends the rest.
            self.transport.write_eof()
            if self._header_timer is None:
                self._arm_header_timer()
        else:
            self.transport.close()

    def _is_answering(self) -> bool:
        """Whether a response is in progress on this connection."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        """Close the connection unless a header block completes within the timeout."""
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        """Stop the header clock, if it runs."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        """Close a connection whose header block is overdue."""
        self._header_timer = None
        if not self._is_rejected:
            log.info("request_header_timeout", client=self.client and self.client[0])
        if self._is_answering():
            # The overdue block is pipelined behind an answer in progress: that answer is
            # finished, and is the connection's last.
            self.cycle.keep_alive = False
            return
        self.transport.close()


def header_too_large_response(max_header_bytes: int, server_state: ServerState) -> bytes:
    """The whole 431 response: status line, uvicorn's default headers, the error envelope."""
    error = InvalidRequest(
        f"The request line and headers are over the limit of {max_header_bytes} bytes.",
        code="request_header_fields_too_large",
        status=HEADER_TOO_LARGE,
    )
    body = orjson.dumps(error.envelope())
    head = [STATUS_LINE[HEADER_TOO_LARGE]]
    head += [name + b": " + value + b"\r\n" for name, value in server_state.default_headers]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the gateway: the header-limited protocol, picklable for workers,
    and no proxy-headers middleware: it rewrites a request's client address and scheme from
    `X-Forwarded-*`, neither of which the gateway reads, at a layer and a check per request."""
    protocol = partial(
        HeaderLimitedProtocol,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
    )
    return {"http": protocol, "proxy_headers": False}

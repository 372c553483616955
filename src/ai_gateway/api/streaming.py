"""SSE framing: chunk -> `data: ...`, a final error event when the stream fails, then `[DONE]`.

A failure before the first chunk propagates as an ordinary HTTP error: the router waits for that
chunk before the 200 is sent. However the response ends (completed, the caller gone, a caller
that stopped reading), the chunk iterator and with it the upstream stream are closed. The chunks
of one upstream read (a burst) travel the stream together, as a list, and their frames leave in
one write: each write wakes the client, and on a loaded machine that costs more than the
gateway's own work for a frame. Nothing is read ahead of a slow client: the next upstream read
waits for the last write (the server's flow control), and what arrives meanwhile is buffered
by the upstream connection up to its read limits and sent on as one burst.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing

import orjson
import structlog
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ai_gateway.api.record import RequestRecord
from ai_gateway.errors import GatewayError, InternalError
from ai_gateway.providers.burst import is_last
from ai_gateway.schemas import ChatCompletionChunk

log = structlog.get_logger(__name__)

DONE = b"data: [DONE]\n\n"
SEND_TIMEOUT = "client_send_timeout"
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def encode_event(payload: object) -> bytes:
    """One complete SSE event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_chunk(chunk: ChatCompletionChunk, *, include_usage: bool) -> bytes:
    """A chunk as normalised, unknown upstream fields included.

    With `include_usage`, OpenAI sends `usage: null` on every chunk but the usage chunk.
    """
    if include_usage and "usage" not in chunk.data:
        return encode_event({**chunk.data, "usage": None})
    return encode_event(chunk.data)


def encode_error(error: GatewayError) -> bytes:
    """The final event of a stream that failed after its 200 was sent."""
    return encode_event({**error.envelope(), "status_code": error.status_code})


async def event_frames(
    first: list[ChatCompletionChunk] | None,
    rest: AsyncGenerator[list[ChatCompletionChunk], None],
    *,
    include_usage: bool,
    record: RequestRecord,
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes, one piece per burst of chunks (usage chunks only when the caller
    asked for them); `[DONE]` ends the last piece: the burst marked last (providers/burst.py),
    or on its own once the chunks end."""
    async with aclosing(rest):
        try:
            chunks = first
            while chunks is not None:
                frames = [
                    encode_chunk(chunk, include_usage=include_usage)
                    for chunk in chunks
                    if relayed(chunk, include_usage=include_usage, record=record)
                ]
                if is_last(chunks):
                    yield b"".join(frames) + DONE
                    await finish(rest)
                    return
                if frames:
                    yield b"".join(frames)
                chunks = await anext(rest, None)
        except GatewayError as exc:
            log.warning("stream_failed", code=exc.code, status=exc.status_code)
            record.error_code = exc.code
            yield encode_error(exc)
        except Exception:
            log.exception("stream_crashed")
            record.error_code = InternalError.code
            yield encode_error(InternalError("The stream failed unexpectedly."))
    yield DONE


async def finish(rest: AsyncGenerator[list[ChatCompletionChunk], None]) -> None:
    """Let a stream whose end has been sent run to its end (its upstream connection is then
    reused); anything it still yields or raises is logged, the caller has its answer."""
    try:
        async for extra in rest:
            log.warning("stream_chunks_after_end", chunks=len(extra))
    except Exception as exc:
        log.warning("stream_failed_after_end", error=type(exc).__name__)


def relayed(chunk: ChatCompletionChunk, *, include_usage: bool, record: RequestRecord) -> bool:
    """Note the chunk on the record (its usage, its text when kept); whether the caller gets
    it (a usage chunk only when asked for)."""
    usage = chunk.usage  # validated once: the usage chunk only
    if usage is not None:
        record.usage = usage
    if record.streamed_text is not None:
        record.keep_streamed_text(chunk.data)
    record.chunks += 1
    return include_usage or usage is None


def event_stream(
    first: list[ChatCompletionChunk] | None,
    rest: AsyncGenerator[list[ChatCompletionChunk], None],
    *,
    include_usage: bool,
    record: RequestRecord,
    headers: Mapping[str, str],
    close: Callable[[], Awaitable[None]] | None = None,
    send_timeout_s: float,
) -> "EventStreamResponse":
    """The 200 event stream of a stream whose first chunks have arrived (routing/router.py
    waits for them, so failures before them are plain HTTP errors). `close` releases the
    upstream when the response ends, however it ends."""
    frames = event_frames(first, rest, include_usage=include_usage, record=record)
    return EventStreamResponse(
        frames,
        headers={**headers, **SSE_HEADERS},
        close=close,
        record=record,
        send_timeout_s=send_timeout_s,
    )


class SendWatchdog:
    """Cuts off a caller whose one write has waited `timeout_s`: the stream's task is
    cancelled. One timer per stream checks every quarter of the timeout (a timer per write
    would cost more than the write), so the cut comes between 1 and 1.25 times the timeout."""

    def __init__(self, send: Send, timeout_s: float) -> None:
        self._send = send
        self.timeout_s = timeout_s
        self.fired = False
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._since: float | None = None
        self._timer = self._loop.call_later(timeout_s / 4, self._check)

    async def send(self, message: Message) -> None:
        """`send`, watched."""
        self._since = self._loop.time()
        await self._send(message)
        self._since = None

    def _check(self) -> None:
        since = self._since
        if since is not None and self._loop.time() - since >= self.timeout_s and self._task:
            self.fired = True
            self._task.cancel()
            return
        self._timer = self._loop.call_later(self.timeout_s / 4, self._check)

    def stop(self) -> None:
        """No more checks."""
        self._timer.cancel()


class EventStreamResponse(StreamingResponse):
    """Streams SSE frames; ends them, closing the upstream, when the response ends however it
    ends: completed, the caller gone (the dispatch cancels the request), or a caller that stops
    reading for `send_timeout_s` (one write waits no longer than that)."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str],
        close: Callable[[], Awaitable[None]] | None = None,
        record: RequestRecord,
        send_timeout_s: float,
    ) -> None:
        super().__init__(frames, headers=headers)
        self.frames = frames
        self._close = close
        self._record = record
        self._send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watchdog = SendWatchdog(send, self._send_timeout_s)
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await watchdog.send(start)
            await self._stream(watchdog.send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not watchdog.fired or task is None or task.uncancel() > 0:
                raise
            # The connection is left unfinished: the server closes it.
            log.warning("stream_send_timeout", send_timeout_s=self._send_timeout_s)
            self._record.error_code = SEND_TIMEOUT
        finally:
            watchdog.stop()
            await self.frames.aclose()
            if self._close is not None:
                await self._close()

    async def _stream(self, send: Send) -> None:
        """Send each piece as it comes (the first at once); `[DONE]`, the last piece, goes out
        with the end of the body (which ends anyway if the pieces stop without it)."""
        is_ended = False
        async with aclosing(self.frames) as frames:
            async for body in frames:
                is_ended = body.endswith(DONE)
                await send({"type": "http.response.body", "body": body, "more_body": not is_ended})
        if not is_ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

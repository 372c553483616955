"""Scriptable, recording fake HTTP/1.1 upstream server for tests, built on raw asyncio streams."""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

__all__ = [
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "gzip_bytes",
    "gzip_reply",
    "json_reply",
    "sse_reply",
]

_HOST = "127.0.0.1"
_READ_SIZE = 64 * 1024
_GZIP_CHUNK = 16 * 1024
_MAX_LINE = 64 * 1024
_MAX_HEADERS = 256
_SHUTDOWN_TIMEOUT = 5.0
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_NO_REPLY_BODY = b'{"error":{"message":"fake upstream: no scripted reply"}}'
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received by the fake upstream (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """Return the request body decoded as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """A scripted reply; `chunks` switches to chunked transfer encoding.

    `content_length` declares a length other than the body's; when it is more, the body is sent
    and the connection then held, unanswered, until the client closes it.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: Sequence[bytes] | None = None
    chunk_delay: float = 0.0
    delay: float = 0.0
    drop_after: int | None = None
    hang: bool = False
    content_length: int | None = None


def _merge_headers(defaults: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """Merge header mappings; names in `extra` override `defaults` case-insensitively."""
    merged = dict(defaults)
    for name, value in (extra or {}).items():
        for existing in [k for k in merged if k.lower() == name.lower()]:
            del merged[existing]
        merged[name] = value
    return merged


def json_reply(
    payload: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    """Build a reply whose body is `payload` encoded as JSON."""
    merged = _merge_headers({"Content-Type": "application/json"}, headers)
    return Reply(status=status, headers=merged, body=json.dumps(payload).encode(), delay=delay)


def gzip_bytes(pieces: Iterable[bytes]) -> bytes:
    """One gzip stream of `pieces`, compressed piece by piece: a body that inflates to far more
    than memory holds is built without ever holding it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush())
    return b"".join(out)


def gzip_reply(
    pieces: Iterable[bytes],
    *,
    status: int = 200,
    content_type: str = "application/json",
    is_chunked: bool = False,
) -> Reply:
    """A reply whose body is `pieces` gzipped (`Content-Encoding: gzip`), sent whole with a
    Content-Length or, when `is_chunked`, in chunked transfer encoding."""
    body = gzip_bytes(pieces)
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    if not is_chunked:
        return Reply(status=status, headers=headers, body=body)
    chunks = [body[at : at + _GZIP_CHUNK] for at in range(0, len(body), _GZIP_CHUNK)]
    return Reply(status=status, headers=headers, chunks=chunks)


def _sse_chunk(event: Any) -> bytes:
    """Encode one SSE event: str as-is, bytes verbatim (raw chunk), anything else as JSON."""
    if isinstance(event, bytes):
        return event
    data = event if isinstance(event, str) else json.dumps(event)
    return b"data: " + data.encode() + b"\n\n"


def sse_reply(
    events: Sequence[Any],
    *,
    done: bool = True,
    chunk_delay: float = 0.0,
    drop_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Build a chunked text/event-stream reply with one chunk per event (plus [DONE])."""
    chunks = [_sse_chunk(event) for event in events]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    defaults = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    return Reply(
        headers=_merge_headers(defaults, headers),
        chunks=chunks,
        chunk_delay=chunk_delay,
        drop_after=drop_after,
    )


_NO_REPLY = Reply(status=599, headers={"Content-Type": "application/json"}, body=_NO_REPLY_BODY)


class _ClientGoneError(Exception):
    """The client closed the connection in the middle of a request."""


class _BadRequestError(Exception):
    """The client sent something that is not HTTP/1.x."""


class _Input:
    """Own read buffer over a StreamReader so EOF can be watched without losing bytes."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        """Wrap `reader`."""
        self._reader = reader
        self._buf = bytearray()
        self.eof = False

    async def _fill(self) -> bool:
        """Read more bytes into the buffer; False once the client has closed."""
        if self.eof:
            return False
        try:
            data = await self._reader.read(_READ_SIZE)
        except ConnectionError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    async def readline(self) -> bytes:
        """Return the next line including its newline, or b"" at EOF."""
        while True:
            index = self._buf.find(b"\n")
            if index >= 0:
                line = bytes(self._buf[: index + 1])
                del self._buf[: index + 1]
                return line
            if len(self._buf) > _MAX_LINE:
                raise _BadRequestError("line too long")
            if not await self._fill():
                return b""

    async def readexactly(self, size: int) -> bytes:
        """Return exactly `size` bytes or raise _ClientGoneError."""
        while len(self._buf) < size:
            if not await self._fill():
                raise _ClientGoneError
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def wait_eof(self) -> None:
        """Buffer incoming bytes until the client closes its side."""
        while await self._fill():
            pass


class _Connection:
    """One accepted client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wrap the stream pair; drain() waits for a fully flushed buffer."""
        self.input = _Input(reader)
        self.writer = writer
        self._watcher: asyncio.Task[None] | None = None
        self._aborted = False
        writer.transport.set_write_buffer_limits(high=0)

    async def write(self, data: bytes) -> None:
        """Write and drain `data`."""
        self.writer.write(data)
        await self.writer.drain()

    def watch(self) -> None:
        """Start watching for the client closing the connection."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self.input.wait_eof())

    async def eof_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the client has closed the connection."""
        self.watch()
        assert self._watcher is not None
        if self._watcher.done() or seconds <= 0:
            return self._watcher.done()
        done, _ = await asyncio.wait({self._watcher}, timeout=seconds)
        return bool(done)

    async def unwatch(self) -> None:
        """Stop the EOF watcher (any bytes it read stay buffered)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def drop(self) -> None:
        """Flush what was written, then abort the TCP connection."""
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self._aborted = True
        self.writer.transport.abort()

    async def close(self, *, abort: bool) -> None:
        """Close the connection (abort instead of flushing when `abort`)."""
        await self.unwatch()
        if abort and not self._aborted:
            self._aborted = True
            self.writer.transport.abort()
        else:
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), timeout=1.0)


def _reason(status: int) -> str:
    """Return the reason phrase for `status`."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Fake Upstream"


def _head(reply: Reply, framing: Mapping[str, str], keep_alive: bool) -> tuple[bytes, bool]:
    """Return the status line plus headers, and whether the connection stays open."""
    lines = [f"HTTP/1.1 {reply.status} {_reason(reply.status)}"]
    has_connection = False
    for name, value in reply.headers.items():
        lowered = name.lower()
        if lowered in _FRAMING_HEADERS:
            continue
        if lowered == "connection":
            has_connection = True
            keep_alive = keep_alive and value.strip().lower() != "close"
        lines.append(f"{name}: {value}")
    lines.extend(f"{name}: {value}" for name, value in framing.items())
    if not keep_alive and not has_connection:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), keep_alive


async def _read_headers(inp: _Input) -> dict[str, str]:
    """Read header lines up to the blank line; names lower-cased, repeats joined by ", "."""
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await inp.readline()
        if not line:
            raise _ClientGoneError
        text = line.decode("latin-1").strip()
        if not text:
            return headers
        name, sep, value = text.partition(":")
        if not sep:
            raise _BadRequestError(f"bad header line {text!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise _BadRequestError("too many headers")


async def _read_chunked(inp: _Input) -> bytes:
    """Read a chunked request body (trailers are discarded)."""
    body = bytearray()
    while True:
        line = await inp.readline()
        if not line:
            raise _ClientGoneError
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequestError(f"bad chunk size {line!r}") from exc
        if size == 0:
            await _read_headers(inp)
            return bytes(body)
        body += await inp.readexactly(size)
        await inp.readexactly(2)


async def _read_body(inp: _Input, headers: Mapping[str, str]) -> bytes:
    """Read the request body as framed by Transfer-Encoding or Content-Length."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(inp)
    length = headers.get("content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError as exc:
        raise _BadRequestError(f"bad content-length {length!r}") from exc
    return await inp.readexactly(size)


async def _read_request(inp: _Input) -> tuple[RecordedRequest, bool] | None:
    """Read one request; None on a clean close between requests; bool is keep-alive."""
    line = await inp.readline()
    while line in (b"\r\n", b"\n"):
        line = await inp.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError(f"bad request line {line!r}")
    method, target, version = parts
    headers = await _read_headers(inp)
    body = await _read_body(inp, headers)
    tokens = {token.strip() for token in headers.get("connection", "").lower().split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return RecordedRequest(method, target, headers, body), keep_alive


class FakeUpstream:
    """A recording HTTP/1.1 server on 127.0.0.1 that answers with scripted replies."""

    def __init__(self) -> None:
        """Create a stopped server; call start() before use."""
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._reply_fn: Callable[[RecordedRequest], Reply] | None = None
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:54321"."""
        if self._url is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """Client closes seen while a reply was delayed, a chunked reply was being sent, or a
        hang reply waited."""
        with self._lock:
            return self._disconnects

    def start(self) -> None:
        """Start the server thread and its event loop; block until listening."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already started")
        self._ready.clear()
        self._start_error = None
        self._stopping = False
        self._loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=_SHUTDOWN_TIMEOUT) or self._start_error is not None:
            error = self._start_error
            self.stop()
            raise RuntimeError("FakeUpstream failed to start") from error

    def stop(self) -> None:
        """Close the server and every open connection, then join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive() and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=_SHUTDOWN_TIMEOUT)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_SHUTDOWN_TIMEOUT)
        self._thread = None
        self._loop = None
        self._url = None

    def reply(self, *replies: Reply) -> None:
        """Enqueue scripted replies, used FIFO, one per request."""
        with self._lock:
            self._queue.extend(replies)

    def reply_with(self, fn: Callable[[RecordedRequest], Reply] | None) -> None:
        """Set (or clear) the function that computes a reply when the FIFO is empty."""
        with self._lock:
            self._reply_fn = fn

    def reset(self) -> None:
        """Clear scripted replies, reply_with, recorded requests and counters."""
        with self._lock:
            self._queue.clear()
            self._reply_fn = None
            self._requests.clear()
            self._disconnects = 0

    def wait_for_disconnects(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least `n` disconnects were counted; False on timeout."""
        return self._poll(lambda: self.disconnects >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least `n` requests were recorded; False on timeout."""
        return self._poll(lambda: len(self.requests) >= n, timeout)

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    @staticmethod
    def _poll(condition: Callable[[], bool], timeout: float) -> bool:
        """Poll `condition` until true or `timeout` seconds elapse."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _run(self) -> None:
        """Thread body: open the listening socket and run the loop until stopped."""
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except Exception as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _open(self) -> None:
        """Listen on an ephemeral port."""
        self._server = await asyncio.start_server(self._handle, _HOST, 0)
        port = self._server.sockets[0].getsockname()[1]
        self._url = f"http://{_HOST}:{port}"

    async def _shutdown(self) -> None:
        """Stop accepting, cancel every connection handler and let transports close."""
        self._stopping = True
        server = self._server
        if server is not None:
            server.close()
        for _ in range(3):
            tasks = [task for task in self._tasks if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            await asyncio.sleep(0)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes; never ends cancelled or with an error."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(reader, writer)
        try:
            if not self._stopping:
                await self._serve(conn)
        except (asyncio.CancelledError, _ClientGoneError, ConnectionError):
            pass
        except _BadRequestError:
            with contextlib.suppress(ConnectionError):
                await conn.write(_BAD_REQUEST)
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await conn.close(abort=self._stopping)
            self._tasks.discard(task)

    async def _serve(self, conn: _Connection) -> None:
        """Answer requests on one connection while it is kept alive."""
        keep_alive = True
        while keep_alive:
            parsed = await _read_request(conn.input)
            if parsed is None:
                return
            request, keep_alive = parsed
            reply = self._record_and_pick(request)
            keep_alive = await self._send(conn, reply, keep_alive)

    def _record_and_pick(self, request: RecordedRequest) -> Reply:
        """Record `request` and choose its reply."""
        with self._lock:
            self._requests.append(request)
            if self._queue:
                return self._queue.popleft()
            fn = self._reply_fn
        if fn is None:
            return _NO_REPLY
        try:
            return fn(request)
        except Exception as exc:
            message = f"fake upstream: reply_with raised {exc!r}"
            return json_reply({"error": {"message": message}}, status=599)

    def _count_disconnect(self) -> None:
        """Count one client disconnect."""
        with self._lock:
            self._disconnects += 1

    async def _send(self, conn: _Connection, reply: Reply, keep_alive: bool) -> bool:
        """Send `reply`; return whether the connection may serve another request."""
        if reply.hang:
            await conn.input.wait_eof()
            self._count_disconnect()
            return False
        if reply.delay > 0 and await conn.eof_within(reply.delay):
            self._count_disconnect()
            return False
        if reply.chunks is not None:
            return await self._send_chunked(conn, reply, reply.chunks, keep_alive)
        await conn.unwatch()
        return await self._send_body(conn, reply, keep_alive)

    async def _send_body(self, conn: _Connection, reply: Reply, keep_alive: bool) -> bool:
        """Send a Content-Length framed reply (or drop it, see Reply.drop_after)."""
        if reply.drop_after == 0:
            await conn.drop()
            return False
        length = len(reply.body) if reply.content_length is None else reply.content_length
        head, keep_alive = _head(reply, {"Content-Length": str(length)}, keep_alive)
        try:
            if reply.drop_after is not None:
                await conn.write(head + reply.body[: reply.drop_after])
                await conn.drop()
                return False
            await conn.write(head + reply.body)
        except ConnectionError:
            return False
        if length > len(reply.body):
            await conn.input.wait_eof()
            self._count_disconnect()
            return False
        return keep_alive

    async def _send_chunked(
        self, conn: _Connection, reply: Reply, chunks: Sequence[bytes], keep_alive: bool
    ) -> bool:
        """Send chunks one by one, watching for the client going away."""
        conn.watch()
        head, keep_alive = _head(reply, {"Transfer-Encoding": "chunked"}, keep_alive)
        limit = len(chunks) if reply.drop_after is None else reply.drop_after
        try:
            await conn.write(head)
            for chunk in itertools.islice(chunks, limit):
                if await conn.eof_within(reply.chunk_delay):
                    self._count_disconnect()
                    return False
                if chunk:
                    await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if reply.drop_after is not None:
                await conn.drop()
                return False
            await conn.write(b"0\r\n\r\n")
        except ConnectionError:
            self._count_disconnect()
            return False
        finally:
            await conn.unwatch()
        return keep_alive

"""BoundedTransport: the httpx transport under the SDK, reading upstream replies within limits.

httpx inflates each gzip or deflate chunk whole (one 64 KiB chunk of a gzip bomb is 64 MiB) and
buffers a body without limit. This transport inflates the body itself, a bounded slice at a time,
and stops reading once a JSON reply, or one event of an event stream, is over its limit. httpx
then sees a plain body: no `Content-Encoding`, nothing left for it to inflate.
"""

import zlib
from collections.abc import AsyncIterator, Iterator
from typing import cast

import httpx

from ai_gateway.providers.upstream_errors import malformed, too_large

INFLATE_STEP = 64 * 1024  # the most one inflate call may produce
GZIP_WBITS = 16 + zlib.MAX_WBITS
# The encodings this transport inflates; the client asks for these and no others.
ACCEPT_ENCODING = "gzip, deflate"
DROPPED_HEADERS = frozenset({b"content-encoding", b"content-length"})
EVENT_STREAM = "text/event-stream"
# An event ends at a blank line; lines end with \n, \r\n or \r (the SDK's decoder accepts all).
EVENT_SEPARATORS = (b"\n\n", b"\r\r", b"\n\r\n")


class Inflater:
    """A gzip or deflate body, inflated at most INFLATE_STEP bytes per call."""

    def __init__(self, encoding: str) -> None:
        self._is_gzip = encoding in ("gzip", "x-gzip")
        self._zlib: zlib._Decompress | None = None

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The inflated bytes of `data`, in slices of at most INFLATE_STEP.

        Bytes after the end of the compressed stream are dropped, not kept: zlib would hold
        them all in `unused_data`.
        """
        if self._zlib is None:
            if not data:
                return
            self._zlib = zlib.decompressobj(self._wbits(data))
        while not self._zlib.eof:
            piece = self._zlib.decompress(data, INFLATE_STEP)
            data = self._zlib.unconsumed_tail
            if piece:
                yield piece
            # A full slice may leave output pending inside zlib even with no input left.
            if not data and len(piece) < INFLATE_STEP:
                return

    def _wbits(self, first: bytes) -> int:
        if self._is_gzip:
            return GZIP_WBITS
        # Some servers send raw deflate for `deflate`; a zlib stream starts with method 8.
        return zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS


class BodyBudget:
    """A whole reply: at most `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self._left = limit

    def spend(self, piece: bytes) -> bool:
        """Count `piece`; False once the reply is over the limit."""
        self._left -= len(piece)
        return self._left >= 0


def last_event_end(data: bytes) -> int:
    """Where the last event separator in `data` ends; -1 when it holds none."""
    end = -1
    for separator in EVENT_SEPARATORS:
        at = data.rfind(separator)
        if at >= 0:
            end = max(end, at + len(separator))
    return end


class EventBudget:
    """An event stream: at most `limit` bytes since the last event ended, counted per read."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open = 0
        self._tail = b""  # the last bytes read, for a separator split across two reads

    def spend(self, piece: bytes) -> bool:
        """Count `piece`; False once the event being read is over the limit."""
        window = self._tail + piece
        end = last_event_end(window)
        self._open = len(window) - end if end >= 0 else self._open + len(piece)
        self._tail = window[-2:]
        return self._open <= self._limit


class BoundedStream(httpx.AsyncByteStream):
    """A reply body, inflated in bounded slices and cut off at its budget."""

    def __init__(
        self,
        raw: httpx.AsyncByteStream,
        *,
        provider: str,
        inflater: Inflater | None,
        budget: BodyBudget | EventBudget,
        limit: int,
    ) -> None:
        self._raw = raw
        self._provider = provider
        self._inflater = inflater
        self._budget = budget
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._raw:
            if self._inflater is None:
                self._spend(chunk)
                yield chunk
                continue
            for piece in self._inflated(self._inflater, chunk):
                self._spend(piece)
                yield piece

    def _spend(self, piece: bytes) -> None:
        if not self._budget.spend(piece):
            what = "stream event" if isinstance(self._budget, EventBudget) else "response"
            raise too_large(self._provider, self._limit, what=what)

    def _inflated(self, inflater: Inflater, chunk: bytes) -> Iterator[bytes]:
        try:
            yield from inflater.pieces(chunk)
        except zlib.error:
            raise malformed(self._provider, "the compressed body does not inflate") from None

    async def aclose(self) -> None:
        """Close the upstream body (and, unless fully read, its connection)."""
        await self._raw.aclose()


def inflater_for(provider: str, encoding: str | None) -> Inflater | None:
    """The inflater for a `Content-Encoding`; a 502 for one the gateway never asked for."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return Inflater(encoding)
    raise malformed(provider, "a content encoding the gateway did not ask for")


def declared_length(response: httpx.Response) -> int:
    """The body's `Content-Length`, 0 when absent or unreadable."""
    try:
        return int(response.headers.get("content-length", 0))
    except ValueError:
        return 0


def is_event_stream(request: httpx.Request, response: httpx.Response) -> bool:
    """A stream the caller asked for and got: read by events, not as one body."""
    return EVENT_STREAM in request.headers.get("accept", "") and response.headers.get(
        "content-type", ""
    ).startswith(EVENT_STREAM)


class BoundedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport so every reply is inflated and read within the gateway's limits."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        provider: str,
        max_response_bytes: int,
        max_event_bytes: int,
    ) -> None:
        self._inner = inner
        self._provider = provider
        self._max_response_bytes = max_response_bytes
        self._max_event_bytes = max_event_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the reply's body is bounded, and over a known limit fails at once."""
        response = await self._inner.handle_async_request(request)
        try:
            stream = self._bounded(request, response)
        except BaseException:
            await response.aclose()
            raise
        headers = [
            (name, value)
            for name, value in response.headers.raw
            if name.lower() not in DROPPED_HEADERS
        ]
        return httpx.Response(
            response.status_code, headers=headers, stream=stream, extensions=response.extensions
        )

    def _bounded(self, request: httpx.Request, response: httpx.Response) -> BoundedStream:
        inflater = inflater_for(self._provider, response.headers.get("content-encoding"))
        budget: BodyBudget | EventBudget
        if is_event_stream(request, response):
            limit = self._max_event_bytes
            budget = EventBudget(limit)
        else:
            limit = self._max_response_bytes
            if declared_length(response) > limit:
                raise too_large(self._provider, limit)
            budget = BodyBudget(limit)
        # An async transport's reply always has an async body.
        raw = cast(httpx.AsyncByteStream, response.stream)
        return BoundedStream(
            raw, provider=self._provider, inflater=inflater, budget=budget, limit=limit
        )

    async def aclose(self) -> None:
        """Close the wrapped transport's connections."""
        await self._inner.aclose()

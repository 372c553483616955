"""The native OpenAI-wire transport: one shared aiohttp session, JSON and SSE, one error mapping.

Measured against the official SDK on the same fake upstream, this path costs several times less
CPU per request (docs/benchmarks.md): no per-request model building, no body transform, one
keep-alive connection pool for every OpenAI-compatible upstream.
"""

import asyncio
import copy
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import aiohttp
import msgspec
import orjson

from ai_gateway import __version__
from ai_gateway.config import constants
from ai_gateway.errors import ProviderError, UpstreamTimeout
from ai_gateway.providers.burst import Burst, converted, is_last
from ai_gateway.providers.normalizer import error_in_body
from ai_gateway.providers.upstream_errors import from_upstream_status, malformed, too_large
from ai_gateway.providers.upstream_limits import UpstreamLimits
from ai_gateway.redaction import Redactor

USER_AGENT = f"ai_gateway/{__version__}"
DONE = b"[DONE]"
# An event ends at a blank line: two line ends, each \n, \r\n or \r.
EVENT_SEPARATORS = (b"\n\n", b"\r\r", b"\n\r\n")


class WireClient:
    """The process's one HTTP session for OpenAI-wire upstreams, with explicit limits, and the
    redactor every upstream's error text goes through."""

    def __init__(
        self,
        *,
        timeout: float,
        limits: UpstreamLimits | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.timeout = timeout
        self.limits = limits or UpstreamLimits()
        self.redactor = redactor or Redactor()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use inside the running event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeouts(),
                json_serialize=lambda value: orjson.dumps(value).decode(),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
            )
        return self._session

    def timeouts(self, connect_s: float | None = None) -> aiohttp.ClientTimeout:
        """Per-socket limits: connecting (default the shorter of 5 s and the request timeout),
        and each read."""
        connect = connect_s or min(self.timeout, constants.DEFAULT_CONNECT_TIMEOUT_S)
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=self.timeout)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


@contextmanager
def wire_errors(provider: str) -> Iterator[None]:
    """Translate transport failures of the native transport into ProviderError, in one place."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"{provider} timed out") from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise ProviderError(f"{provider} unreachable or the connection dropped") from exc


def decode_json(provider: str, body: bytes) -> Any:
    """The upstream's JSON, or a 502 when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise malformed(provider, "invalid JSON") from None


async def read_body(response: aiohttp.ClientResponse, *, provider: str, limit: int) -> bytes:
    """The whole (inflated) body; a 502 once it is over `limit`, by `Content-Length` before
    reading anything.

    aiohttp inflates as it is read, a bounded slice at a time, so stopping here keeps memory
    flat however far the body would inflate.
    """
    if (response.content_length or 0) > limit:
        raise too_large(provider, limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(provider, limit)
        parts.append(chunk)
    return b"".join(parts)


def error_body(body: bytes) -> object:
    """An error reply's body: its JSON if it has one, else its text."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def last_event_end(data: bytearray, start: int) -> int:
    """Where the last event separator in `data[start:]` ends; -1 when there is none."""
    end = -1
    for separator in EVENT_SEPARATORS:
        at = data.rfind(separator, start)
        if at >= 0:
            end = max(end, at + len(separator))
    return end


def event_payloads(block: bytes | bytearray, *, provider: str, limit: int) -> Iterator[bytes]:
    """The joined `data:` lines of each complete event in `block`, in order."""
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    events = block.split(b"\n\n")
    if len(block) > limit and max(map(len, events)) > limit:
        raise too_large(provider, limit, what="stream event")
    for event in events:
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual one-line event
            yield bytes(event[6:])
            continue
        lines = [
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        ]
        if lines:
            yield b"\n".join(lines)


async def sse_data(
    content: aiohttp.StreamReader, *, provider: str, max_event_bytes: int
) -> AsyncGenerator[list[bytes], None]:
    """The `data:` payloads of the server-sent events before `[DONE]`, a list per read: the
    events that arrived together go on together (never an empty list), but for the stream's
    first event, which goes on alone.

    The body is split into events here, from chunks as they arrive, so no line limit of the
    reader applies; an event (or the unfinished rest of one) over `max_event_bytes` is a 502.
    The body is read to its end even after `[DONE]`, so the connection goes back to the pool.
    """
    pending = bytearray()  # what follows the last complete event
    is_first = True
    async for chunk in content.iter_any():
        start = max(len(pending) - 2, 0)  # a separator may begin in the previous chunk
        pending += chunk
        end = last_event_end(pending, start)
        if end >= 0:
            block = pending[:end]
            del pending[:end]
            payloads, is_done = complete_events(block, provider=provider, limit=max_event_bytes)
            if is_first and len(payloads) > 1:
                # The first event goes on alone, so that it reaches the caller at once, before
                # the rest of its burst is normalised and framed.
                yield Burst(payloads[:1])
                del payloads[:1]
            if payloads:
                is_first = False
                yield Burst(payloads, is_last=is_done)
            if is_done:
                await discard_rest(content)
                return
        if len(pending) > max_event_bytes:
            raise too_large(provider, max_event_bytes, what="stream event")
    payloads, is_done = complete_events(pending, provider=provider, limit=max_event_bytes)
    if payloads:
        yield Burst(payloads, is_last=is_done)


def complete_events(
    block: bytes | bytearray, *, provider: str, limit: int
) -> tuple[list[bytes], bool]:
    """The payloads of the events in `block` up to `[DONE]`, and whether it came."""
    payloads: list[bytes] = []
    for data in event_payloads(block, provider=provider, limit=limit):
        if data == DONE:
            return payloads, True
        payloads.append(data)
    return payloads, False


async def discard_rest(content: aiohttp.StreamReader) -> None:
    """Read what is left of a body without keeping it."""
    while await content.readany():
        pass


def release_or_close(response: aiohttp.ClientResponse) -> Callable[..., Awaitable[None]]:
    """An exit callback: a fully read response goes back to the pool, any other is closed.

    A stream left early (client gone, error) must not return to the pool half-read.
    """

    async def exit_response(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            response.release()
        else:
            response.close()

    return exit_response


class OpenAIWire:
    """One OpenAI-compatible upstream over the shared session: chat, stream and model list."""

    is_mock = False

    def __init__(
        self,
        wire: WireClient,
        *,
        provider: str,
        base_url: str,
        api_key: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._wire = wire
        self._provider = provider
        self._base_url = base_url.rstrip("/")
        self._redactor = wire.redactor.including(api_key)
        self._timeouts = wire.timeouts()
        self._headers = {**(headers or {}), "Content-Type": "application/json"}
        if api_key:  # local servers may need none
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"OpenAIWire(provider={self._provider!r}, base_url={self._base_url!r})"

    def with_connect_timeout(self, seconds: float) -> "OpenAIWire":
        """The same upstream whose new connections give up after `seconds`."""
        variant = copy.copy(self)
        variant._timeouts = self._wire.timeouts(seconds)
        return variant

    def _body(self, model: str, messages: msgspec.Raw, params: dict[str, Any]) -> bytes:
        """The upstream JSON: the caller's messages and parameters spliced in as sent."""
        return msgspec.json.encode({"model": model, "messages": messages, **params})

    def _status_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> Exception:
        return from_upstream_status(
            self._provider, status, error_body(body), headers=headers, redactor=self._redactor
        )

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """A JSON reply's body; any status but 2xx, a redirect included, is an error."""
        limit = self._wire.limits.max_response_bytes
        body = await read_body(response, provider=self._provider, limit=limit)
        if response.status >= 300:
            raise self._status_error(response.status, body, response.headers)
        return body

    async def chat(self, model: str, messages: msgspec.Raw, **params: Any) -> dict[str, Any]:
        """One completion. Each read is bounded by the request timeout here; the whole call
        by the router's attempt timer (routing/router.py), not by a second timer here."""
        params.pop("stream", None)
        url = f"{self._base_url}/chat/completions"
        with wire_errors(self._provider):
            async with self._wire.session.post(
                url,
                data=self._body(model, messages, params),
                headers=self._headers,
                timeout=self._timeouts,
                allow_redirects=False,
            ) as response:
                body = await self._read(response)
        data = self._object(decode_json(self._provider, body))
        if (error := error_in_body(self._provider, data, self._redactor)) is not None:
            raise error
        return data

    async def stream_chat(
        self, model: str, messages: msgspec.Raw, **params: Any
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Chunks as they arrive, those of one read together. Each read is bounded by the
        request timeout here; the wait for the first chunks by the router's attempt timer."""
        params["stream"] = True
        url = f"{self._base_url}/chat/completions"
        body = self._body(model, messages, params)
        with wire_errors(self._provider):
            async with AsyncExitStack() as stack:
                response = await self._wire.session.post(
                    url,
                    data=body,
                    headers=self._headers,
                    timeout=self._timeouts,
                    allow_redirects=False,
                )
                stack.push_async_exit(release_or_close(response))
                if response.status >= 300:
                    await self._read(response)
                events = sse_data(
                    response.content,
                    provider=self._provider,
                    max_event_bytes=self._wire.limits.max_event_bytes,
                )
                first = await anext(events, None)
                if first is not None:
                    payloads: list[bytes] | None = first
                    while payloads is not None:
                        chunks, error = converted(payloads, self._event)
                        if chunks:
                            yield Burst(chunks, is_last=is_last(payloads) and error is None)
                        if error is not None:
                            raise error
                        payloads = await anext(events, None)

    def _event(self, data: bytes) -> tuple[dict[str, Any]]:
        """An event's chunk (one: `converted` takes what each payload becomes)."""
        event = self._object(decode_json(self._provider, data))
        if (error := error_in_body(self._provider, event, self._redactor)) is not None:
            raise error
        return (event,)

    def _object(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise malformed(self._provider, "not a JSON object")
        return value

    async def list_models(self) -> list[dict[str, Any]]:
        """`GET {base}/models`."""
        with wire_errors(self._provider):
            async with (
                asyncio.timeout(self._wire.timeout),
                self._wire.session.get(
                    f"{self._base_url}/models",
                    headers=self._headers,
                    timeout=self._timeouts,
                    allow_redirects=False,
                ) as response,
            ):
                body = await self._read(response)
        data = self._object(decode_json(self._provider, body)).get("data")
        if not isinstance(data, list):
            raise malformed(self._provider, "model list without data")
        return [entry for entry in data if isinstance(entry, dict)]

    async def aclose(self) -> None:
        """The shared session is closed by its owner, not by each upstream."""

"""CerebrasClient: the official Cerebras SDK, built once, with one place that translates its errors.

Retry policy belongs to the gateway's callers and routing, never to a hidden layer, and the
gateway owns time limits, so the SDK is built with `max_retries=0`,
`warm_tcp_connection=False` (its default sends blocking warm-up requests from the constructor)
and a shared httpx client with explicit connection limits that never follows a redirect and
reads replies through BoundedTransport.
"""

import asyncio
import copy
import inspect
import json
from collections.abc import AsyncGenerator, Iterator
from contextlib import AsyncExitStack, contextmanager
from functools import cache
from typing import Any, cast

import cerebras.cloud.sdk as sdk
import httpx
import msgspec
from cerebras.cloud.sdk import AsyncCerebras
from cerebras.cloud.sdk.resources.chat.completions import AsyncCompletionsResource

from ai_gateway.config import constants
from ai_gateway.errors import ProviderError, UpstreamTimeout
from ai_gateway.providers.bounded_transport import ACCEPT_ENCODING, EVENT_STREAM, BoundedTransport
from ai_gateway.providers.normalizer import error_in_body
from ai_gateway.providers.protocol import UpstreamAPI
from ai_gateway.providers.upstream_errors import from_upstream_status, malformed
from ai_gateway.providers.upstream_limits import UpstreamLimits
from ai_gateway.redaction import Redactor
from ai_gateway.schemas import as_python, python_params

PROVIDER = constants.CEREBRAS
# Keyword arguments of `create()` that are not body fields: a caller's body field with one of
# these names must travel in `extra_body`, never as a keyword.
NOT_BODY_ARGUMENTS = frozenset(
    {
        "self",
        "messages",
        "model",
        "stream",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
        "cf_ray",
        "x_amz_cf_id",
        "x_delay_time",
    }
)


# The Cerebras clients (SDK, native wire, mock) are all UpstreamAPI implementations.
CerebrasAPI = UpstreamAPI


@cache
def sdk_body_parameters() -> frozenset[str]:
    """The body fields `chat.completions.create()` names as keyword arguments."""
    names = inspect.signature(AsyncCompletionsResource.create).parameters
    return frozenset(names) - NOT_BODY_ARGUMENTS


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split body fields into SDK keywords and `extra_body` (fields the SDK does not name)."""
    known = sdk_body_parameters()
    keywords = {name: value for name, value in params.items() if name in known}
    extra = {name: value for name, value in params.items() if name not in known}
    return keywords, extra


def build_http_client(timeout: float, limits: UpstreamLimits) -> httpx.AsyncClient:
    """The shared HTTP client under the SDK: keep-alive with explicit limits and timeouts.

    A redirect is never followed: it would send the prompt and the key to another host. The
    client does not read proxy settings from the environment (the native transport does not
    either), as a proxy transport would bypass BoundedTransport.
    """
    pool = httpx.Limits(
        max_connections=limits.max_connections,
        max_keepalive_connections=min(constants.UPSTREAM_MAX_KEEPALIVE, limits.max_connections),
    )
    transport = BoundedTransport(
        httpx.AsyncHTTPTransport(limits=pool),
        provider=PROVIDER,
        max_response_bytes=limits.max_response_bytes,
        max_event_bytes=limits.max_event_bytes,
    )
    return httpx.AsyncClient(
        timeout=upstream_timeout(timeout),
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


def upstream_timeout(timeout: float) -> httpx.Timeout:
    """Per-operation timeouts: connect is capped at a few seconds, reads get the full budget."""
    return httpx.Timeout(timeout, connect=min(timeout, constants.DEFAULT_CONNECT_TIMEOUT_S))


@contextmanager
def cerebras_errors(redactor: Redactor) -> Iterator[None]:
    """Translate every SDK and transport failure into a GatewayError, in exactly one place."""
    try:
        yield
    except (sdk.APITimeoutError, httpx.TimeoutException, TimeoutError) as exc:
        raise UpstreamTimeout(f"{PROVIDER} timed out") from exc
    except (sdk.APIConnectionError, httpx.TransportError) as exc:
        # The SDK wraps whatever fails while it reads a reply, BoundedTransport's 502s too.
        if isinstance(exc.__cause__, ProviderError):
            raise exc.__cause__ from None
        raise ProviderError(f"{PROVIDER} unreachable or the connection dropped") from exc
    except sdk.APIStatusError as exc:
        # Not chained: the SDK's exception holds the upstream body as sent, keys and all.
        raise from_upstream_status(
            PROVIDER, exc.status_code, exc.body, headers=exc.response.headers, redactor=redactor
        ) from None
    except (sdk.APIResponseValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise malformed(PROVIDER, "invalid JSON") from exc


class CerebrasClient:
    """Real mode: Cerebras through the official `AsyncCerebras` SDK."""

    is_mock = False

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = constants.CEREBRAS_DEFAULT_BASE_URL,
        timeout: float = constants.DEFAULT_REQUEST_TIMEOUT_S,
        http_client: httpx.AsyncClient | None = None,
        limits: UpstreamLimits | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._timeout = timeout
        self._redactor = (redactor or Redactor()).including(api_key)
        self._owns_http = http_client is None
        self._http = http_client or build_http_client(timeout, limits or UpstreamLimits())
        self._sdk = AsyncCerebras(
            api_key=api_key,
            base_url=base_url,
            timeout=upstream_timeout(timeout),
            max_retries=0,
            http_client=self._http,
            warm_tcp_connection=False,
        )
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"CerebrasClient(base_url={self.base_url!r}, timeout={self._timeout})"

    def with_connect_timeout(self, seconds: float) -> "CerebrasClient":
        """The same client (sharing its connections) whose connects give up after `seconds`."""
        variant = copy.copy(self)
        # copy() would send the SDK's TCP warm-up request unless told not to
        variant._sdk = self._sdk.with_options(
            timeout=httpx.Timeout(self._timeout, connect=seconds), warm_tcp_connection=False
        )
        variant._owns_http = False
        return variant

    async def chat(self, model: str, messages: msgspec.Raw, **params: Any) -> dict[str, Any]:
        """One completion; the whole call is bounded by the request timeout."""
        params = python_params(params)
        params.pop("stream", None)
        keywords, extra = split_params(params)
        with cerebras_errors(self._redactor):
            async with asyncio.timeout(self._timeout):
                completion = await self._sdk.chat.completions.create(
                    model=model,
                    messages=sdk_messages(messages),
                    **keywords,
                    extra_body=extra or None,
                )
        data = to_json_object(completion)
        if (error := error_in_body(PROVIDER, data, self._redactor)) is not None:
            raise error
        return data

    async def stream_chat(
        self, model: str, messages: msgspec.Raw, **params: Any
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Chunks as they arrive, one per list (the SDK hands them over one at a time); the
        upstream response is closed when the iterator is.

        The request timeout bounds the wait for the first chunk; after it, each chunk may take
        up to the read timeout, so long answers are not cut off.
        """
        params = python_params(params)
        params.pop("stream", None)
        keywords, extra = split_params(params)
        with cerebras_errors(self._redactor):
            async with AsyncExitStack() as stack:
                async with asyncio.timeout(self._timeout):
                    stream = await self._sdk.chat.completions.create(
                        model=model,
                        messages=sdk_messages(messages),
                        stream=True,
                        **keywords,
                        extra_body=extra or None,
                        # Tells BoundedTransport to bound each event, not the whole stream.
                        extra_headers={"Accept": EVENT_STREAM},
                    )
                    if not isinstance(stream, sdk.AsyncStream):
                        raise malformed(PROVIDER, "expected an event stream")
                    await stack.enter_async_context(stream)
                    first = await anext(stream, None)
                if first is None:
                    return
                yield [to_json_object(first)]
                async for chunk in stream:
                    yield [to_json_object(chunk)]

    async def list_models(self) -> list[dict[str, Any]]:
        """`GET /v1/models` upstream."""
        with cerebras_errors(self._redactor):
            async with asyncio.timeout(self._timeout):
                page = await self._sdk.models.list()
        data = to_json_object(page).get("data")
        if not isinstance(data, list):
            raise malformed(PROVIDER, "model list without data")
        return [entry for entry in data if isinstance(entry, dict)]

    async def aclose(self) -> None:
        """Close the HTTP client if this client built it."""
        if self._owns_http:
            await self._http.aclose()


def sdk_messages(messages: msgspec.Raw) -> Any:
    """The caller's messages as the SDK's TypedDicts (plain JSON objects either way): the SDK
    builds the upstream JSON itself, so this transport decodes what the native one splices."""
    return cast(Any, as_python(messages))


def to_json_object(result: object) -> dict[str, Any]:
    """The upstream JSON exactly as sent (`to_dict()` keeps unknown fields)."""
    to_dict = getattr(result, "to_dict", None)
    if to_dict is None:
        raise malformed(PROVIDER, "not a JSON object")
    value = to_dict()
    if not isinstance(value, dict):
        raise malformed(PROVIDER, "not a JSON object")
    return value

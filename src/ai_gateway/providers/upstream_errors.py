"""How an upstream's HTTP error (or an error object in its body) becomes a GatewayError."""

import re
from collections.abc import Mapping

from ai_gateway.config.constants import RETRY_AFTER_HEADERS
from ai_gateway.errors import (
    GatewayError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    UpstreamAuthError,
    UpstreamRedirected,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from ai_gateway.redaction import Redactor

CALLER_STATUSES = frozenset({400, 404, 409, 413, 422})
UPSTREAM_AUTH_STATUSES = frozenset({401, 402, 403})
MAX_UPSTREAM_MESSAGE = 1000


def upstream_text(text: str | None, redactor: Redactor) -> str | None:
    """Upstream text fit to return and log: keys redacted, then cut to a bounded length.

    Redacting first, so a cut never leaves the start of a key that no longer looks like one.
    """
    return None if text is None else redactor.redact(text)[:MAX_UPSTREAM_MESSAGE]


def detail_text(item: object) -> str:
    """One entry of a FastAPI-style `detail` list."""
    return str(item.get("msg", item)) if isinstance(item, Mapping) else str(item)


def upstream_message(body: object) -> str | None:
    """The human-readable message of an upstream error body, in any of the common shapes."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            message = inner.get("message") or inner.get("detail")
            if isinstance(message, list):
                return "; ".join(detail_text(item) for item in message if item)
            return str(message) if message else None
        if isinstance(inner, str):
            return inner
    if isinstance(body, str) and body.strip():
        return body.strip()
    return None


def upstream_field(body: object, name: str) -> str | None:
    """A string field (param, code) of an upstream error body, if it has one."""
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    value = inner.get(name) if isinstance(inner, Mapping) else None
    return str(value) if value not in (None, "") else None


# What a retry hint may hold: seconds (or milliseconds) as a number, or an HTTP date. Anything
# else is upstream text that could carry a secret, so it is not passed on.
RETRY_HINT = re.compile(r"\d{1,10}(\.\d{1,6})?|[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} [\d:]{8} GMT")


def retry_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's well-formed retry hints, under their exact names."""
    return {
        name: headers[name]
        for name in RETRY_AFTER_HEADERS
        if name in headers and RETRY_HINT.fullmatch(headers[name].strip())
    }


def from_upstream_status(
    provider: str,
    status: int,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    redactor: Redactor | None = None,
) -> GatewayError:
    """Map an upstream HTTP error to the error the caller should see, every upstream string
    (message, code, param) redacted."""
    headers = headers or {}
    redactor = redactor or Redactor()
    message = upstream_message(body)
    code = upstream_text(upstream_field(body, "code"), redactor)
    if status == 429:
        text = upstream_text(message, redactor) or f"{provider} rate limit exceeded"
        return RateLimited(text, code=code, headers=retry_headers(headers))
    if status in UPSTREAM_AUTH_STATUSES:
        return UpstreamAuthError(
            f"{provider} rejected the gateway's upstream credentials (HTTP {status})"
        )
    if 300 <= status < 400:
        return UpstreamRedirected(f"{provider} returned HTTP {status}; redirects are not followed")
    if status == 408:
        return UpstreamTimeout(f"{provider} timed out (HTTP 408)")
    if status in CALLER_STATUSES:
        return InvalidRequest(
            upstream_text(message, redactor) or f"{provider} rejected the request (HTTP {status})",
            param=upstream_text(upstream_field(body, "param"), redactor),
            code=code,
            status=status,
        )
    return ProviderError(f"{provider} returned HTTP {status}", headers=retry_headers(headers))


def malformed(provider: str, detail: str) -> ProviderError:
    """The upstream answered with something that is not a valid completion."""
    return ProviderError(f"{provider} returned a malformed response: {detail}")


def too_large(provider: str, limit: int, *, what: str = "response") -> UpstreamResponseTooLarge:
    """The upstream sent a reply (or one stream event) over the gateway's size limit."""
    return UpstreamResponseTooLarge(f"{provider} sent a {what} larger than {limit} bytes")

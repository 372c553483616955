"""How an upstream's HTTP error (or an error object in its body) becomes a GatewayError."""

import re
from collections.abc import Iterable, Mapping

from ai_gateway.config.constants import RETRY_AFTER_HEADERS
from ai_gateway.errors import (
    GatewayError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    UpstreamAuthError,
    UpstreamTimeout,
)

CALLER_STATUSES = frozenset({400, 404, 409, 413, 422})
UPSTREAM_AUTH_STATUSES = frozenset({401, 402, 403})
MAX_UPSTREAM_MESSAGE = 1000
SECRET_PATTERN = re.compile(r"(?i)\b(bearer\s+)?(c?sk|key|api[_-]?key)[-_][A-Za-z0-9_\-]{8,}")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and anything shaped like an API key from upstream text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return SECRET_PATTERN.sub("[redacted]", text)[:MAX_UPSTREAM_MESSAGE]


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


def retry_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's retry hints, under their exact names."""
    return {name: headers[name] for name in RETRY_AFTER_HEADERS if name in headers}


def from_upstream_status(
    provider: str,
    status: int,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> GatewayError:
    """Map an upstream HTTP error to the error the caller should see."""
    headers = headers or {}
    message = upstream_message(body)
    if status == 429:
        text = scrub(message or f"{provider} rate limit exceeded", secrets)
        code = upstream_field(body, "code")
        return RateLimited(text, code=code, headers=retry_headers(headers))
    if status in UPSTREAM_AUTH_STATUSES:
        return UpstreamAuthError(
            f"{provider} rejected the gateway's upstream credentials (HTTP {status})"
        )
    if status == 408:
        return UpstreamTimeout(f"{provider} timed out (HTTP 408)")
    if status in CALLER_STATUSES:
        return InvalidRequest(
            scrub(message or f"{provider} rejected the request (HTTP {status})", secrets),
            param=upstream_field(body, "param"),
            code=upstream_field(body, "code"),
            status=status,
        )
    return ProviderError(f"{provider} returned HTTP {status}", headers=retry_headers(headers))


def malformed(provider: str, detail: str) -> ProviderError:
    """The upstream answered with something that is not a valid completion."""
    return ProviderError(f"{provider} returned a malformed response: {detail}")

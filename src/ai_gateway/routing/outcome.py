"""What a failed attempt means for the rest of the request: retry, fall back, or stop.

- retry: connection errors, timeouts, malformed answers, upstream 5xx and 429. The same deployment
  may be tried again after a backoff (or the upstream's Retry-After), others at once.
- fall back: this deployment cannot serve this request, another might: the upstream rejected the
  gateway's key (401, 402, 403), redirected (never followed), sent a reply over the size limit
  (fetching it again would cost the same), does not know the model or path (404), the provider
  has no key here, the deployment's policy rejects a parameter, or (where the alias allows it)
  the context is too long for this model.
- stop: any other error about the caller's request (upstream 400, 409, 413, 422) goes back at
  once.
"""

import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import Enum

from ai_gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    ParameterRejected,
    ProviderError,
    ProviderNotConfigured,
    RateLimited,
    UpstreamAuthError,
    UpstreamRedirected,
    UpstreamResponseTooLarge,
)

CONTEXT_LENGTH = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long", re.I
)


class Outcome(Enum):
    """What to do after a failed attempt."""

    RETRY = "retry"
    FALL_BACK = "fall_back"
    STOP = "stop"


def is_context_length(error: GatewayError) -> bool:
    """An upstream's "the prompt does not fit this model" answer."""
    if not isinstance(error, InvalidRequest):
        return False
    return error.code == "context_length_exceeded" or bool(CONTEXT_LENGTH.search(error.message))


def is_not_found(error: GatewayError) -> bool:
    """An upstream 404: this deployment's model id (or base URL) is wrong, not the request."""
    return isinstance(error, InvalidRequest) and error.status_code == 404


def classify(error: GatewayError, *, fallback_on_context_length: bool) -> Outcome:
    """The outcome of one failed attempt."""
    if isinstance(error, UpstreamAuthError | UpstreamRedirected | UpstreamResponseTooLarge):
        return Outcome.FALL_BACK  # the same deployment would answer the same way
    if isinstance(error, RateLimited | ProviderError):
        return Outcome.RETRY
    if isinstance(error, ProviderNotConfigured | ParameterRejected) or is_not_found(error):
        return Outcome.FALL_BACK
    if fallback_on_context_length and is_context_length(error):
        return Outcome.FALL_BACK
    return Outcome.STOP


def marks_unhealthy(error: GatewayError) -> bool:
    """Whether the failure counts against the deployment's breaker.

    A 429 is the upstream working as designed (Retry-After handles it), and a rejected parameter
    or a too-long prompt is about this request, not the deployment.
    """
    if isinstance(error, DeadlineExceeded):
        return False  # the route ran out of time; the deployment may be fine
    return isinstance(error, ProviderError | ProviderNotConfigured) or is_not_found(error)


def informativeness(error: GatewayError) -> int:
    """How much the caller learns from an error; the highest is the one returned.

    A 400 (prompt too long, parameter refused) says what to change; a 429 says when to come back;
    an upstream failure only that it failed; an unconfigured provider least of all.
    """
    if isinstance(error, InvalidRequest):
        return 5
    if isinstance(error, RateLimited):
        return 4
    if isinstance(error, DeadlineExceeded):
        return 2  # says only that time ran out; an upstream's own failure says more
    if isinstance(error, ProviderError):
        return 3
    return 1


def most_informative(errors: list[GatewayError]) -> GatewayError:
    """The error the caller sees when every attempt failed (the latest among equals)."""
    return max(reversed(errors), key=informativeness)


def retry_after_s(error: GatewayError, *, now: float | None = None) -> float | None:
    """The upstream's `retry-after-ms` / `retry-after` (seconds or an HTTP date), in seconds."""
    headers = {name.lower(): value for name, value in error.headers.items()}
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            value = headers["retry-after"].strip()
            if re.fullmatch(r"\d+(\.\d+)?", value):
                seconds = float(value)
            else:
                when = parsedate_to_datetime(value)
                if when.tzinfo is None:  # "-0000": UTC by RFC 5322
                    when = when.replace(tzinfo=UTC)
                seconds = when.timestamp() - (time.time() if now is None else now)
        else:
            return None
    except (ValueError, TypeError, OverflowError):
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None

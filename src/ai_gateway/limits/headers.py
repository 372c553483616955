"""Rate limit response headers in OpenAI's spelling: `x-ratelimit-*` on every counted answer,
`retry-after` / `retry-after-ms` on a refusal."""

from ai_gateway.limits.limiter import Quota

HeaderNames = tuple[bytes, bytes, bytes]


def header_names(dimension: str) -> HeaderNames:
    """The limit, remaining and reset header names of one dimension ("requests" or "tokens")."""
    return (
        f"x-ratelimit-limit-{dimension}".encode(),
        f"x-ratelimit-remaining-{dimension}".encode(),
        f"x-ratelimit-reset-{dimension}".encode(),
    )


REQUESTS_HEADERS = header_names("requests")
TOKENS_HEADERS = header_names("tokens")
SECONDS = tuple(b"%d" % seconds for seconds in range(60))
FRACTIONS = tuple(f".{ms:03d}".rstrip("0").rstrip(".").encode() + b"s" for ms in range(1000))
"""Milliseconds as Go writes them after the seconds, with the unit: b"s", b".5s", b".004s"."""


def duration_bytes(ms: int) -> bytes:
    """A duration as OpenAI writes its reset headers (Go's duration format): "20ms", "1s",
    "1m30.5s", "6m0s", "1h0m0s"; "0s" for none. From tables: a reset is formatted twice per
    answer.

    https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers
    """
    if ms <= 0:
        return b"0s"
    if ms < 1000:
        return b"%dms" % ms
    seconds = SECONDS[ms // 1000 % 60] + FRACTIONS[ms % 1000]
    if ms < 60_000:  # the usual case: a reset within the minute's window
        return seconds
    minutes = ms // 60_000
    if minutes < 60:
        return b"%dm%s" % (minutes, seconds)
    return b"%dh%dm%s" % (minutes // 60, minutes % 60, seconds)


def duration_text(ms: int) -> str:
    """`duration_bytes` as text."""
    return duration_bytes(ms).decode()


def quota_headers(names: HeaderNames, quota: Quota) -> list[tuple[bytes, bytes]]:
    """The limit, remaining and reset headers of one dimension."""
    limit, remaining, reset = names
    return [
        (limit, b"%d" % quota.limit),
        (remaining, b"%d" % quota.remaining),
        (reset, duration_bytes(quota.reset_ms)),
    ]


def rate_limit_headers(requests: Quota | None, tokens: Quota | None) -> list[tuple[bytes, bytes]]:
    """The `x-ratelimit-*` headers of the dimensions that are limited (none for the others)."""
    headers: list[tuple[bytes, bytes]] = []
    if requests is not None:
        headers += quota_headers(REQUESTS_HEADERS, requests)
    if tokens is not None:
        headers += quota_headers(TOKENS_HEADERS, tokens)
    return headers


def retry_after_headers(ms: int) -> dict[str, str]:
    """`retry-after` in whole seconds rounded up (at least 1, the header has no smaller unit)
    and `retry-after-ms`, which OpenAI's SDKs prefer when present."""
    ms = max(0, ms)
    return {"retry-after": str(max(1, -(-ms // 1000))), "retry-after-ms": str(ms)}

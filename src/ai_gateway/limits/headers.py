"""Rate limit response headers in OpenAI's spelling: `x-ratelimit-*` on every counted answer,
`retry-after` / `retry-after-ms` on a refusal."""

from ai_gateway.limits.limiter import Quota

MS_PER_HOUR = 3_600_000
MS_PER_MINUTE = 60_000


def duration_text(ms: int) -> str:
    """A duration as OpenAI writes its reset headers (Go's duration format): "20ms", "1s",
    "1m30.5s", "6m0s", "1h0m0s"; "0s" for none.

    https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers
    """
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, MS_PER_HOUR)
    minutes, rest = divmod(rest, MS_PER_MINUTE)
    seconds = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def quota_headers(dimension: str, quota: Quota) -> list[tuple[bytes, bytes]]:
    """The limit, remaining and reset headers of one dimension ("requests" or "tokens")."""
    return [
        (f"x-ratelimit-limit-{dimension}".encode(), str(quota.limit).encode()),
        (f"x-ratelimit-remaining-{dimension}".encode(), str(quota.remaining).encode()),
        (f"x-ratelimit-reset-{dimension}".encode(), duration_text(quota.reset_ms).encode()),
    ]


def rate_limit_headers(requests: Quota | None, tokens: Quota | None) -> list[tuple[bytes, bytes]]:
    """The `x-ratelimit-*` headers of the dimensions that are limited (none for the others)."""
    headers: list[tuple[bytes, bytes]] = []
    if requests is not None:
        headers += quota_headers("requests", requests)
    if tokens is not None:
        headers += quota_headers("tokens", tokens)
    return headers


def retry_after_headers(ms: int) -> dict[str, str]:
    """`retry-after` in whole seconds rounded up (at least 1, the header has no smaller unit)
    and `retry-after-ms`, which OpenAI's SDKs prefer when present."""
    ms = max(0, ms)
    return {"retry-after": str(max(1, -(-ms // 1000))), "retry-after-ms": str(ms)}

"""Rate limit headers in OpenAI's spelling and duration format."""

import pytest

from ai_gateway.limits.headers import (
    duration_bytes,
    duration_text,
    rate_limit_headers,
    retry_after_headers,
)
from ai_gateway.limits.limiter import Quota


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (1, "1ms"),
        (20, "20ms"),
        (999, "999ms"),
        (1_000, "1s"),
        (1_500, "1.5s"),
        (17_280, "17.28s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (90_500, "1m30.5s"),
        (360_000, "6m0s"),
        (3_600_000, "1h0m0s"),
        (3_723_004, "1h2m3.004s"),
    ],
)
def test_durations_read_like_openais(ms: int, text: str) -> None:
    assert duration_text(ms) == text


def go_duration(ms: int) -> str:
    """Go's duration format for whole milliseconds, spelled out plainly (the reference)."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def test_every_duration_reads_like_go() -> None:
    durations = [*range(-2, 125_000), *range(125_000, 90_000_000, 997), 10**12 + 7]

    assert [duration_bytes(ms) for ms in durations] == [
        go_duration(ms).encode() for ms in durations
    ]


def test_both_dimensions_give_six_headers() -> None:
    headers = rate_limit_headers(Quota(60, 59, 1_000), Quota(150_000, 149_984, 6))

    assert headers == [
        (b"x-ratelimit-limit-requests", b"60"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1s"),
        (b"x-ratelimit-limit-tokens", b"150000"),
        (b"x-ratelimit-remaining-tokens", b"149984"),
        (b"x-ratelimit-reset-tokens", b"6ms"),
    ]


def test_only_limited_dimensions_have_headers() -> None:
    assert rate_limit_headers(None, Quota(100, 0, 60_000)) == [
        (b"x-ratelimit-limit-tokens", b"100"),
        (b"x-ratelimit-remaining-tokens", b"0"),
        (b"x-ratelimit-reset-tokens", b"1m0s"),
    ]
    assert rate_limit_headers(None, None) == []


@pytest.mark.parametrize(
    ("ms", "seconds"),
    [(0, "1"), (1, "1"), (999, "1"), (1_000, "1"), (1_001, "2"), (59_500, "60")],
)
def test_retry_after_rounds_up_to_whole_seconds(ms: int, seconds: str) -> None:
    assert retry_after_headers(ms) == {"retry-after": seconds, "retry-after-ms": str(ms)}


def test_a_negative_wait_is_no_wait() -> None:
    assert retry_after_headers(-3) == {"retry-after": "1", "retry-after-ms": "0"}

"""The log line's timestamp: structlog's ISO 8601 UTC format, formatted once per second."""

from datetime import UTC, datetime

import pytest

from ai_gateway.logs import UtcTimestamp


def test_the_timestamp_is_iso_utc_with_microseconds_and_follows_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamp, clock = UtcTimestamp(), iter([1_790_000_000.25, 1_790_000_000.5, 1_790_000_001.000007])
    monkeypatch.setattr("ai_gateway.logs.time.time", lambda: next(clock))

    stamps = [stamp(None, "info", {})["timestamp"] for _ in range(3)]

    assert stamps == [
        "2026-09-21T14:13:20.250000Z",
        "2026-09-21T14:13:20.500000Z",
        "2026-09-21T14:13:21.000007Z",
    ]
    parsed = datetime.strptime(stamps[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert parsed.timestamp() == 1_790_000_000.25

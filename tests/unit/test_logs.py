"""The log line's timestamp: exactly what structlog's `TimeStamper(fmt="iso", utc=True)` writes,
formatted once per second."""

from datetime import UTC, datetime

import pytest
import structlog

from ai_gateway.logs import UtcTimestamp

NANOS = [
    1_790_000_000_250_000_000,
    1_790_000_000_999_999_999,  # floored, as datetime.now() does
    1_790_000_001_000_000_000,  # a whole second: no fraction
    1_790_000_001_000_007_400,
    1_790_003_601_123_456_789,  # an hour later: the cached second is not reused
]


def test_the_timestamp_is_what_structlogs_iso_utc_stamper_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamp = UtcTimestamp()
    ours = []
    for nanos in NANOS:
        monkeypatch.setattr("ai_gateway.logs.time.time_ns", lambda nanos=nanos: nanos)
        ours.append(stamp(None, "info", {})["timestamp"])

    class Clock(datetime):
        now_ns = 0

        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            seconds, micros = divmod(cls.now_ns // 1000, 1_000_000)
            return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)

    monkeypatch.setattr(structlog.processors.datetime, "datetime", Clock)
    theirs = []
    for nanos in NANOS:
        Clock.now_ns = nanos
        theirs.append(
            structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "", {})["timestamp"]
        )

    assert ours == theirs
    assert ours[:3] == [
        "2026-09-21T14:13:20.250000Z",
        "2026-09-21T14:13:20.999999Z",
        "2026-09-21T14:13:21Z",
    ]

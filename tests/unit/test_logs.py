"""Log lines: the timestamp, exactly what structlog's `TimeStamper(fmt="iso", utc=True)` writes,
formatted once per second; an info line written directly, the line structlog writes."""

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
import structlog
from structlog.testing import LogCapture, capture_logs

from ai_gateway import logs
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


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging's changes undone after the test."""
    saved = structlog.get_config()
    loggers = [logging.getLogger(name) for name in ("", *TOUCHED_LOGGERS)]
    states = [(lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    monkeypatch.setattr(logs, "_direct", None)
    yield
    structlog.configure(**saved)
    for lg, (handlers, level, propagate, disabled) in zip(loggers, states, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


TOUCHED_LOGGERS = (
    *("uvicorn", "uvicorn.error", "uvicorn.access"),
    *("httpx", "httpcore", "cerebras", "alembic"),
)
"""The standard library loggers configure_logging sets up."""


FIELDS = {"method": "POST", "status": 200, "latency_ms": 1.5, "model": None, "stream": False}


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_an_info_line_is_the_line_structlog_writes(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    logs.configure_logging("info", fmt)
    with structlog.contextvars.bound_contextvars(request_id="req_1"):
        logs.info_line("request", dict(FIELDS))
        structlog.get_logger("x").info("request", **FIELDS)

    direct, through_structlog = capsys.readouterr().err.splitlines()
    if fmt == "json":
        ours, theirs = orjson.loads(direct), orjson.loads(through_structlog)
        assert ours.pop("timestamp")
        assert theirs.pop("timestamp")
        assert list(ours.items()) == list(theirs.items())  # the same keys, in the same order
        assert ours == {**FIELDS, "event": "request", "request_id": "req_1", "level": "info"}
    else:
        assert direct.split(" ", 1)[1] == through_structlog.split(" ", 1)[1]  # all but the time
        assert "request_id=req_1" in direct


@pytest.mark.usefixtures("restored_logging")
def test_a_test_capturing_log_lines_gets_the_info_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("info", "json")
    with capture_logs() as captured:
        logs.info_line("request", dict(FIELDS))

    assert captured == [{**FIELDS, "event": "request", "log_level": "info"}]
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("changed", ["processors", "logger_factory"])
def test_an_info_line_goes_through_structlog_once_it_is_configured_again(
    capsys: pytest.CaptureFixture[str], changed: str
) -> None:
    logs.configure_logging("info", "json")
    capture = LogCapture()
    if changed == "processors":
        structlog.configure(processors=[capture])
    else:  # the same processors, writing elsewhere
        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())

    logs.info_line("request", dict(FIELDS))

    if changed == "processors":
        assert capture.entries == [{**FIELDS, "event": "request", "log_level": "info"}]
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("restored_logging")
def test_no_info_line_is_written_above_the_info_level(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("warning", "json")
    logs.info_line("request", dict(FIELDS))

    assert capsys.readouterr().err == ""

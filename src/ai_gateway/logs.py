"""Structured logging: structlog key/value events, JSON or console, request id from contextvars."""

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog


def dumps(value: Any, **_: Any) -> str:
    """JSON for log lines; anything orjson cannot encode is logged by its str()."""
    return orjson.dumps(value, default=str).decode()


class UtcTimestamp:
    """A structlog processor: `timestamp` in ISO 8601 UTC with microseconds, as structlog's
    `TimeStamper(fmt="iso", utc=True)` writes it, the date and time formatted once per second
    (a line per request: formatting a datetime for each cost more than the rest of the stamp)."""

    def __init__(self) -> None:
        self._cached = (-1, "")  # (second, its text): one tuple, so threads never mix the two

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._cached = (second, prefix)
        # As datetime.isoformat() writes it: no fraction at all at a whole second.
        event["timestamp"] = f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"
        return event


def configure_logging(level: str, fmt: str) -> None:
    """Route structlog and the standard library (uvicorn) through one renderer."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcTimestamp(),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (print() would write the line and its newline separately).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("httpx", "httpcore", "cerebras", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))

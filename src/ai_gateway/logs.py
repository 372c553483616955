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


class DirectLine:
    """Info lines written through the processors `configure_logging` installed, without a bound
    logger: the same processors and the same writer, so the same line.

    For the request line, written on every request with 17 fields: structlog's bound logger
    copies its context and re-packs the keywords twice before the processors run, which cost
    about as much as the processors and the write together (6 of 12 µs a line here).
    """

    def __init__(self, out: structlog.WriteLogger) -> None:
        self.config = structlog.get_config()
        self.out = out

    def write(self, event: str, fields: dict[str, Any]) -> bool:
        """Write the line; False, nothing written, once structlog has been configured again
        (other processors, wrapper or logger factory)."""
        config = structlog.get_config()
        if not all(config[name] is self.config[name] for name in CONFIGURED):
            return False
        line: Any = {**fields, "event": event}
        try:
            for processor in self.config["processors"]:
                line = processor(self.out, "info", line)
        except structlog.DropEvent:
            return True
        self.out.msg(line)
        return True


CONFIGURED = ("processors", "wrapper_class", "logger_factory")
"""What DirectLine requires to be as configure_logging left it."""


_direct: DirectLine | None = None
"""Set by configure_logging when info lines are written."""


def info_line(event: str, fields: dict[str, Any]) -> None:
    """An info line: directly (DirectLine) once configure_logging has set up logging, through
    structlog otherwise (a logger got for the line: one kept would keep the configuration it
    first logged under, as `cache_logger_on_first_use` makes it)."""
    direct = _direct
    if direct is None or not direct.write(event, fields):
        structlog.get_logger(__name__).info(event, **fields)


def configure_logging(level: str, fmt: str) -> None:
    """Route structlog and the standard library (uvicorn) through one renderer."""
    global _direct
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
    processors = [*shared, structlog.processors.format_exc_info, renderer]
    threshold = logging.getLevelName(level.upper())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # One write per line (print() would write the line and its newline separately).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    writes_info = threshold <= logging.INFO
    _direct = DirectLine(structlog.WriteLogger(sys.stderr)) if writes_info else None
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

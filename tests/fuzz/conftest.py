"""Fuzz fixtures: the gateway's log output captured per module, and an upstream that answers
anything with a valid completion or stream."""

import logging
import tempfile
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
import structlog
from hypothesis.configuration import set_hypothesis_home_dir
from structlog.testing import capture_logs

from ai_gateway.api import connection, dispatch, renderer, routes, streaming
from ai_gateway.providers import registry
from ai_gateway.routing import attempts, breaker, router
from tests.fake_upstream import FakeUpstream, RecordedRequest, Reply, json_reply, sse_reply
from tests.fakes import MODEL, chunk_payloads, completion_payload

# Every module of the request path that logs: each gets a fresh logger while a module's
# gateways run, so a logger cached under an earlier structlog configuration is captured too.
LOGGING_MODULES: tuple[ModuleType, ...] = (
    attempts,
    breaker,
    connection,
    dispatch,
    registry,
    renderer,
    router,
    routes,
    streaming,
)
FAILURE_EVENTS = frozenset({"unhandled_error", "stream_crashed"})
MODEL_LIST = {
    "object": "list",
    "data": [{"id": MODEL, "object": "model", "created": 1, "owned_by": "Cerebras"}],
}
REQUEST_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


# Outside the repository, and kept between runs: Hypothesis builds its unicode tables there
# once (seconds, several under coverage) instead of on every run.
HYPOTHESIS_HOME = Path(tempfile.gettempdir()) / "ai_gateway-hypothesis"


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps caches (constants of the collected modules, unicode tables) in its
    home directory, by default `.hypothesis` in the directory pytest started in: elsewhere, so
    that a run writes nothing into the repository (the example database is off: see runs.py).
    Set here, before collection ends, because Hypothesis's plugin fills a cache then."""
    set_hypothesis_home_dir(HYPOTHESIS_HOME)


class RecordCollector(logging.Handler):
    """Keeps every standard-library record (uvicorn's and asyncio's own errors land there)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class GatewayLogs:
    """What the gateways of one module logged: structlog events and standard-library records."""

    events: list[MutableMapping[str, Any]]
    records: list[logging.LogRecord] = field(default_factory=list)

    def failures(self) -> list[str]:
        """Every sign of a crash: an unhandled error, a traceback, an error-level line, a 5xx
        the gateway itself answered."""
        found = [
            f"{event.get('event')}: {event}"
            for event in self.events
            if event.get("event") in FAILURE_EVENTS
            or event.get("log_level") in ("error", "critical")
            or "exc_info" in event
            or (event.get("event") == "request" and event.get("status") in (500, 501))
        ]
        found += [
            f"{record.name}: {record.getMessage()}"
            for record in self.records
            if record.levelno >= logging.ERROR or record.exc_info
        ]
        return found


@contextmanager
def captured_logs() -> Iterator[GatewayLogs]:
    """Everything the gateway logs in the block, kept instead of printed."""
    collector = RecordCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch, capture_logs() as events:
            for module in LOGGING_MODULES:
                monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
            yield GatewayLogs(events, collector.records)
    finally:
        root.removeHandler(collector)


@pytest.fixture(scope="module")
def gateway_logs() -> Iterator[GatewayLogs]:
    """The module's log output, checked once the module's gateways have stopped."""
    with captured_logs() as logs:
        yield logs
    assert logs.failures() == [], "\n".join(logs.failures())


def is_stream_request(body: bytes) -> bool:
    """Whether a forwarded chat request asked for a stream (`"stream": true` at the top)."""
    try:
        fields = REQUEST_FIELDS.decode(body)
    except msgspec.DecodeError:
        return False
    return bytes(fields.get("stream", b"")) == b"true"


def answer_anything(request: RecordedRequest) -> Reply:
    """A valid reply to any request: the model list, a stream, or a completion."""
    if request.method == "GET" and request.path.endswith("/models"):
        return json_reply(MODEL_LIST)
    if is_stream_request(request.body):
        return sse_reply(chunk_payloads())
    return json_reply(completion_payload())


@pytest.fixture
def answering_upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, answering every request well."""
    fake_upstream.reply_with(answer_anything)
    return fake_upstream

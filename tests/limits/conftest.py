"""Fixtures of the limits tests."""

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ai_gateway.limits import outage as outage_module

Logs = list[MutableMapping[str, Any]]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    """The outage module's log events, whatever logging another test configured."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(0), cache_logger_on_first_use=False
    )
    monkeypatch.setattr(outage_module, "log", structlog.get_logger(outage_module.__name__))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(**saved)

"""GET /metrics: the Prometheus exposition, in the format the scraper asks for (text or
OpenMetrics). With several workers (`PROMETHEUS_MULTIPROC_DIR` set), every worker writes its
samples to files in that directory and whichever worker answers the scrape sums them."""

import os
import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.responses import Response

from ai_gateway.api.routes import Call

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A live-mode gauge file of one process: `gauge_livesum_1234.db`.
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def multiprocess_directory() -> Path | None:
    """The shared metrics directory when the workers share one, else None."""
    value = os.environ.get(MULTIPROC_VARIABLE)
    return Path(value) if value else None


def is_running(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_workers(directory: Path) -> list[int]:
    """Drop the live gauges of workers that have exited (a restarted or killed worker's
    breaker states and ledger lag would otherwise count forever); the ids dropped."""
    pids = {
        int(match.group(1))
        for entry in directory.iterdir()
        if (match := LIVE_GAUGE_FILE.fullmatch(entry.name))
    }
    dead = sorted(pid for pid in pids if not is_running(pid))
    for pid in dead:
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]  # untyped upstream
    return dead


class MetricsEndpoint:
    """Serves the metrics: this process's registry, or every worker's files."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        refresh: Callable[[], None],
        directory: Path | None = None,
    ) -> None:
        self.registry = registry
        self.directory = directory
        self._refresh = refresh

    @classmethod
    def for_process(
        cls, registry: CollectorRegistry | None, *, refresh: Callable[[], None]
    ) -> "MetricsEndpoint":
        """One process: `registry`; several workers: the shared directory's files."""
        directory = multiprocess_directory()
        if directory is None:
            return cls(registry or CollectorRegistry(), refresh=refresh)
        shared = CollectorRegistry()
        MultiProcessCollector(shared, path=str(directory))  # type: ignore[no-untyped-call]  # untyped upstream
        return cls(shared, refresh=refresh, directory=directory)

    async def handle(self, call: Call) -> Response:
        """The exposition, this worker's gauges brought up to date first."""
        self._refresh()
        if self.directory is not None:
            forget_dead_workers(self.directory)
        try:
            encode, content_type = choose_encoder(call.request.headers.get("accept", ""))
        except (TypeError, ValueError):  # an Accept it cannot read: the plain text format
            encode, content_type = choose_encoder("")
        return Response(encode(self.registry), media_type=content_type)

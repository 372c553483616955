"""SharedMetrics: the metrics of several workers (`serve --workers N`). Each worker writes its
cells to its own file in the directory the server made for them (`metrics-<pid>-<random>.json`,
replaced whole every PUBLISH_INTERVAL_S and at shutdown; the random part keeps a later worker
given the same process id from taking an earlier one's place); the worker answering /metrics
adds every other worker's file to its own live cells. Counters and histograms of a worker that
has exited still count (its requests happened); gauges count only from live workers. A worker
killed outright (SIGKILL, out of memory) loses what it counted since its last publication, at
most a second.
"""

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics_core import Metric

from ai_gateway.observability.metrics import Family, GatewayMetrics, Kind

PUBLISH_INTERVAL_S = 1.0
"""How stale another worker's figures may be at a scrape."""
WORKER_FILE = re.compile(r"metrics-(\d{1,10})-[0-9a-f]+\.json")


def is_running(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_state_of(family: Family[Any], state: Any) -> bool:
    """Whether another worker's state fits this family's cells (a file of another version, or
    damaged, is passed over rather than break the scrape)."""
    if family.kind is Kind.HISTOGRAM:
        return (
            isinstance(state, list)
            and len(state) == 2
            and isinstance(state[0], list)
            and len(state[0]) == len(family.bucket_names)
            and all(type(count) is int for count in state[0])
            and type(state[1]) in (int, float)
        )
    return type(state) in (int, float)


def fitting(family: Family[Any], items: object) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Another worker's (label values, state) pairs of this family that fit its cells."""
    for item in items if isinstance(items, list) else ():
        if not (isinstance(item, list) and len(item) == 2):
            continue
        values, state = item
        if (
            isinstance(values, list)
            and len(values) == len(family.labels)
            and all(isinstance(value, str) for value in values)
            and is_state_of(family, state)
        ):
            yield tuple(values), state


def merged(kind: Kind, mine: Any, theirs: Any) -> Any:
    """Two workers' states of one cell, added up as the metric's kind says (new objects: a
    live cell is never changed)."""
    if kind is Kind.HISTOGRAM:
        (counts, total), (other_counts, other_total) = mine, theirs
        return [[a + b for a, b in zip(counts, other_counts, strict=True)], total + other_total]
    if kind is Kind.GAUGE_MAX:
        return max(mine, theirs)
    return mine + theirs


class SharedMetrics:
    """This worker's file, and the sum of every worker's at a scrape."""

    def __init__(self, metrics: GatewayMetrics, directory: Path) -> None:
        self.metrics = metrics
        self.directory = directory
        self.pid = os.getpid()
        self.nonce = secrets.token_hex(4)

    @property
    def name(self) -> str:
        """This worker's file name."""
        return f"metrics-{self.pid}-{self.nonce}.json"

    @property
    def path(self) -> Path:
        """This worker's file."""
        return self.directory / self.name

    def publish(self) -> None:
        """Write this worker's cells (to a temporary name first: a reader sees a whole file)."""
        states = {family.name: family.states() for family in self.metrics.families}
        temporary = self.directory / f".{self.name}.tmp"
        with contextlib.suppress(OSError):  # the server is removing the directory at exit
            temporary.write_bytes(orjson.dumps(states))
            temporary.replace(self.path)

    async def run(self) -> None:
        """Publish every PUBLISH_INTERVAL_S until cancelled."""
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            self.publish()

    def others(self) -> list[tuple[bool, dict[str, list[list[Any]]]]]:
        """(is the worker alive, its states) of every other worker's file."""
        found: list[tuple[bool, dict[str, list[list[Any]]]]] = []
        try:
            entries = list(self.directory.iterdir())
        except OSError:  # removed (the server is stopping), or never made
            return found
        for entry in entries:
            match = WORKER_FILE.fullmatch(entry.name)
            if match is None or entry.name == self.name:
                continue
            try:
                states = orjson.loads(entry.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # removed meanwhile, or not one of ours
            if isinstance(states, dict):
                found.append((is_running(int(match.group(1))), states))
        return found

    def collect(self) -> Iterator[Metric]:
        """Every worker's metrics added up (prometheus-client's collector protocol)."""
        others = self.others()
        for family in self.metrics.families:
            yield family.metric(self._states(family, others))

    @staticmethod
    def _states(
        family: Family[Any], others: list[tuple[bool, dict[str, list[list[Any]]]]]
    ) -> dict[tuple[str, ...], Any]:
        states = family.own_states()
        is_gauge = family.kind in (Kind.GAUGE_MAX, Kind.GAUGE_SUM)
        for is_alive, worker in others:
            if is_gauge and not is_alive:
                continue
            for key, state in fitting(family, worker.get(family.name)):
                states[key] = (
                    state if key not in states else merged(family.kind, states[key], state)
                )
        return states

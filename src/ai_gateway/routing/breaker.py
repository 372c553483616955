"""Breaker: one deployment's circuit (closed, open, half-open), and the board of all of them.

A breaker only orders and skips deployments; it never refuses a request on its own. When every
deployment of a route is open, the router still tries them, least recently failed first
(routing/attempts.py), so a breaker cannot turn a blip into an outage.
"""

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from ai_gateway.config.file import BreakerConfig

log = structlog.get_logger(__name__)

# Breakers of `provider/model` routes the config does not name, kept least recently used first.
MAX_BREAKERS = 1024

StateWatcher = Callable[[str, "State"], None]
"""Told of a breaker's deployment and its new state at every change (metrics)."""


class State(StrEnum):
    """A circuit's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Breaker:
    """Opens after `consecutive_failures` failures in a row, or when the failure ratio over the
    last `window` outcomes reaches `failure_ratio` with at least `min_requests` of them; lets one
    probe through after `cooldown_s`; closes on the probe's success, reopens on its failure."""

    key: str
    config: BreakerConfig
    clock: Callable[[], float] = time.monotonic
    state: State = State.CLOSED
    consecutive: int = 0
    opened_at: float | None = None
    last_failure_at: float | None = None
    probing: bool = False
    outcomes: deque[bool] = field(default_factory=deque)
    watcher: StateWatcher | None = None

    def __post_init__(self) -> None:
        self.outcomes = deque(self.outcomes, maxlen=self.config.window)

    def current(self) -> State:
        """The state now: an open circuit whose cooldown has passed is half-open."""
        if self.state is State.OPEN and self._cooled_down():
            self._move(State.HALF_OPEN, "cooldown over")
        return self.state

    def _cooled_down(self) -> bool:
        return self.opened_at is not None and (
            self.clock() - self.opened_at >= self.config.cooldown_s
        )

    def allows(self) -> bool:
        """Whether a request may go to this deployment without the all-open rule."""
        state = self.current()
        return state is State.CLOSED or (state is State.HALF_OPEN and not self.probing)

    def started(self) -> bool:
        """An attempt starts; True when it is the half-open circuit's one probe. (An attempt on
        an open circuit, made because every deployment of its route is open, is no probe.)"""
        if self.current() is State.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self, *, probe: bool = False) -> None:
        """The deployment answered; any success outside the closed state closes the circuit."""
        self.released(probe=probe)
        self.consecutive = 0
        self.outcomes.append(True)
        if self.state is not State.CLOSED:
            self.outcomes.clear()
            self._move(State.CLOSED, "probe succeeded" if probe else "a request succeeded")

    def failed(self, *, probe: bool = False) -> None:
        """The deployment failed in a way that says it is unhealthy."""
        self.released(probe=probe)
        self.consecutive += 1
        self.outcomes.append(False)
        self.last_failure_at = self.clock()
        if self.state is not State.CLOSED:
            self._open("probe failed" if probe else "failed while not closed")
        elif self.consecutive >= self.config.consecutive_failures:
            self._open(f"{self.consecutive} consecutive failures")
        elif len(self.outcomes) >= self.config.min_requests and self.ratio >= (
            self.config.failure_ratio
        ):
            self._open(f"failure ratio {self.ratio:.2f}")

    def released(self, *, probe: bool = False) -> None:
        """An attempt ended; only the probe itself frees the probe slot."""
        if probe:
            self.probing = False

    @property
    def ratio(self) -> float:
        """Failures among the recent outcomes."""
        return self.outcomes.count(False) / len(self.outcomes) if self.outcomes else 0.0

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock()
        self._move(State.OPEN, reason)

    def _move(self, state: State, reason: str) -> None:
        if state is not self.state:
            log.warning("breaker_" + state.value, deployment=self.key, reason=reason)
            if self.watcher is not None:
                self.watcher(self.key, state)
        self.state = state

    def snapshot(self) -> dict[str, Any]:
        """The breaker as the health endpoint shows it."""
        state = self.current()
        retry_in = None
        if state is State.OPEN and self.opened_at is not None:
            retry_in = round(max(self.config.cooldown_s - (self.clock() - self.opened_at), 0), 3)
        return {
            "deployment": self.key,
            "state": state.value,
            "consecutive_failures": self.consecutive,
            "recent_requests": len(self.outcomes),
            "recent_failure_ratio": round(self.ratio, 3),
            "probe_in_flight": self.probing,
            "half_open_in_s": retry_in,
            "seconds_since_last_failure": (
                None
                if self.last_failure_at is None
                else round(self.clock() - self.last_failure_at, 3)
            ),
        }


class BreakerBoard:
    """Every deployment's breaker: the configured ones for good, others least recently used."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        pinned: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._clock = clock
        self._pinned = {key: Breaker(key, config, clock) for key in pinned}
        self._others: OrderedDict[str, Breaker] = OrderedDict()
        self._watcher: StateWatcher | None = None

    def watch(self, watcher: StateWatcher) -> None:
        """Tell `watcher` of every breaker's changes from now on, and of each current state
        (an open breaker whose cooldown has passed is half-open here)."""
        self._watcher = watcher
        for breaker in self:
            breaker.watcher = watcher
            watcher(breaker.key, breaker.current())

    def __iter__(self) -> Iterator[Breaker]:
        yield from self._pinned.values()
        yield from self._others.values()

    def get(self, key: str) -> Breaker:
        """The breaker of deployment `provider/model`, made on first use."""
        breaker = self._pinned.get(key)
        if breaker is not None:
            return breaker
        breaker = self._others.get(key)
        if breaker is None:
            breaker = self._others[key] = Breaker(
                key, self._config, self._clock, watcher=self._watcher
            )
            if len(self._others) > MAX_BREAKERS:
                self._others.popitem(last=False)
        else:
            self._others.move_to_end(key)
        return breaker

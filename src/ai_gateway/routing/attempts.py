"""Attempts: one request's plan over its route's deployments: which next, and when.

The next attempt goes to the deployment that may start soonest: a failed deployment waits its
backoff (or the upstream's Retry-After) while the others go at once, so a failure falls back to
the next deployment immediately and retries come after; ties go to the fewest tries, then route
order. Deployments whose breaker is open (or half-open with its probe out) are left out while
any other may still be tried; once none may, they are tried too, least recently failed first.
Nothing is refused only because a breaker is open.
"""

import asyncio
import random
import time
from collections.abc import Callable, Collection
from enum import StrEnum
from typing import Protocol

import structlog

from ai_gateway.errors import GatewayError, ProviderError
from ai_gateway.routing.breaker import BreakerBoard
from ai_gateway.routing.outcome import (
    Outcome,
    classify,
    marks_unhealthy,
    most_informative,
    retry_after_s,
)
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.schemas import ChatCompletionRequest

log = structlog.get_logger(__name__)

# No retry, fallback or hedge starts with less than this left before the deadline.
MIN_ATTEMPT_S = 0.01


class AttemptKind(StrEnum):
    """Why an attempt started: the request's first, the same deployment again, another
    deployment after the previous attempt (a fallback), or a race beside a slow one (a hedge)."""

    FIRST = "first"
    RETRY = "retry"
    FALLBACK = "fallback"
    HEDGE = "hedge"


class AttemptWatch(Protocol):
    """One running upstream attempt, told once how it ended."""

    def succeeded(self, value: object) -> None:
        """The deployment answered (a completion, or a stream's first chunk)."""
        ...

    def failed(self, error: BaseException) -> None:
        """The attempt failed, or was cancelled (a hedge loser, a caller who left)."""
        ...


class AttemptWatcher(Protocol):
    """Told of every upstream attempt (metrics, traces); the router works the same without one."""

    def started(
        self,
        route: Route,
        deployment: Deployment,
        request: ChatCompletionRequest | None,
        kind: AttemptKind,
    ) -> AttemptWatch:
        """An attempt has started; the returned watch is told how it ends."""
        ...


def weighted_order(deployments: tuple[Deployment, ...], rng: random.Random) -> list[Deployment]:
    """A random order in which each next deployment is drawn in proportion to its weight."""
    left, order = list(deployments), []
    while left:
        pick = rng.choices(range(len(left)), weights=[d.weight for d in left])[0]
        order.append(left.pop(pick))
    return order


class Attempts:
    """The request's attempt plan, fed the outcome of each attempt."""

    def __init__(
        self,
        route: Route,
        breakers: BreakerBoard,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        watcher: AttemptWatcher | None = None,
        request: ChatCompletionRequest | None = None,
    ) -> None:
        self.route = route
        self.policy = route.policy
        self.request = request
        self._breakers = breakers
        self._watcher = watcher
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  # spreading load, not secrets
        deployments = route.deployments
        self.order = (
            weighted_order(deployments, self._rng)
            if self.policy.weighted and len(deployments) > 1
            else list(deployments)
        )
        self.deadline = clock() + self.policy.deadline_s
        self.tries = {d.key: 0 for d in self.order}
        self.ready_at = {d.key: 0.0 for d in self.order}
        self.excluded: set[str] = set()
        self.errors: list[GatewayError] = []
        self.count = 0
        self.previous: str | None = None
        """The deployment of the attempt before the latest one."""
        self.latest: str | None = None

    def next(self, busy: Collection[str] = ()) -> tuple[Deployment, float] | None:
        """The next deployment and when to start it; None when nothing is left to try."""
        now = self._clock()
        last_start = self.deadline - MIN_ATTEMPT_S
        if self.count and now >= last_start:  # the first attempt always starts
            return None
        candidates = [
            (index, d)
            for index, d in enumerate(self.order)
            if d.key not in self.excluded
            and d.key not in busy
            and self.tries[d.key] <= self.policy.retries
            and self.ready_at[d.key] < last_start
        ]
        if not candidates:
            return None
        # with one candidate there is nothing to choose: breakers never refuse
        chosen = candidates[0][1] if len(candidates) == 1 else self._choose(candidates, now)
        return chosen, max(self.ready_at[chosen.key], now)

    def _choose(self, candidates: list[tuple[int, Deployment]], now: float) -> Deployment:
        """Among several: the soonest ready whose breaker allows it; if none does, the least
        recently failed."""
        allowed = [item for item in candidates if self._breakers.get(item[1].key).allows()]
        if allowed:
            return min(allowed, key=lambda item: self._rank(item[0], item[1], now))[1]
        return min(candidates, key=lambda item: self._last_failure(item[1]))[1]

    def _rank(self, index: int, deployment: Deployment, now: float) -> tuple[float, int, int]:
        ready = max(self.ready_at[deployment.key], now)
        return (ready, self.tries[deployment.key], index)

    def _last_failure(self, deployment: Deployment) -> float:
        return self._breakers.get(deployment.key).last_failure_at or 0.0

    def started(self, deployment: Deployment) -> bool:
        """An attempt on `deployment` begins; True when it is its breaker's probe."""
        self.tries[deployment.key] += 1
        self.count += 1
        self.previous, self.latest = self.latest, deployment.key
        return self._breakers.get(deployment.key).started()

    def watch(self, deployment: Deployment, *, is_hedge: bool = False) -> AttemptWatch | None:
        """Tell the watcher that the attempt just `started` on `deployment` has begun; None
        when nothing watches."""
        if self._watcher is None:
            return None
        return self._watcher.started(
            self.route, deployment, self.request, self.kind(is_hedge=is_hedge)
        )

    def kind(self, *, is_hedge: bool = False) -> AttemptKind:
        """What the latest attempt is, from the deployments of it and the one before."""
        if is_hedge:
            return AttemptKind.HEDGE
        if self.previous is None:
            return AttemptKind.FIRST
        return AttemptKind.RETRY if self.previous == self.latest else AttemptKind.FALLBACK

    def remaining_s(self) -> float:
        """Time left before the request's deadline."""
        return max(self.deadline - self._clock(), 0.0)

    def failed(self, deployment: Deployment, error: GatewayError) -> Outcome:
        """Note a failed attempt; the outcome says whether the request goes on."""
        self.errors.append(error)
        outcome = classify(error, fallback_on_context_length=self.policy.fallback_on_context_length)
        if outcome is Outcome.FALL_BACK:
            self.excluded.add(deployment.key)
        elif outcome is Outcome.RETRY:
            self._schedule_retry(deployment, error)
        log.info(
            "attempt_failed",
            deployment=deployment.key,
            status=error.status_code,
            code=error.code,
            outcome=outcome.value,
            deployment_try=self.tries[deployment.key],
        )
        return outcome

    def _schedule_retry(self, deployment: Deployment, error: GatewayError) -> None:
        """When the deployment may be tried again: its Retry-After, else the backoff."""
        wait = retry_after_s(error)
        if wait is not None and wait > self.policy.retry_after_max_s:
            self.excluded.add(deployment.key)  # not worth waiting for within this request
            return
        if wait is None or wait == 0:
            tries = self.tries[deployment.key]
            base = self.policy.backoff_initial_s * 2 ** (tries - 1)
            wait = min(base, self.policy.backoff_max_s) * self._rng.uniform(0.5, 1.0)
        self.ready_at[deployment.key] = self._clock() + wait

    def settle_failure(self, deployment: Deployment, probe: bool, error: GatewayError) -> Outcome:
        """Note a failed attempt on the plan and on the deployment's breaker.

        Failures that say the deployment is unwell count against it; the caller's own error
        counts as healthy (the upstream answered); anything else (a 429, a parameter refused)
        only frees the probe.
        """
        breaker = self._breakers.get(deployment.key)
        outcome = self.failed(deployment, error)
        if marks_unhealthy(error):
            breaker.failed(probe=probe)
        elif outcome is Outcome.STOP:
            breaker.succeeded(probe=probe)
        else:
            breaker.released(probe=probe)
        return outcome

    def settle_success(self, deployment: Deployment, probe: bool) -> None:
        """The deployment answered."""
        self._breakers.get(deployment.key).succeeded(probe=probe)

    def release(self, deployment: Deployment, probe: bool) -> None:
        """An attempt ended without an outcome (cancelled): only its probe slot is freed."""
        self._breakers.get(deployment.key).released(probe=probe)

    async def next_turn(self) -> Deployment:
        """The next deployment, once its turn has come (backoff, Retry-After); when nothing is
        left to try, the most informative error."""
        upcoming = self.next()
        if upcoming is None:
            raise self.final_error()
        deployment, start_at = upcoming
        if start_at > self._clock():
            await asyncio.sleep(start_at - self._clock())
        return deployment

    def final_error(self) -> GatewayError:
        """The error for the caller once nothing is left to try."""
        if not self.errors:
            return ProviderError(f"No deployment of '{self.route.name}' could be tried.")
        return most_informative(self.errors)

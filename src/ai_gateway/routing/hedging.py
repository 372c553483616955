"""Hedging: a route's attempts raced as tasks. Another attempt starts when the running one is
slow (`hedge_after_ms`); the first answer wins; every loser is cancelled and what it opened
(a stream's upstream connection) is closed, even when the request itself is cancelled meanwhile.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from ai_gateway.errors import GatewayError
from ai_gateway.routing.attempts import MIN_ATTEMPT_S, Attempts, AttemptWatch
from ai_gateway.routing.breaker import BreakerBoard
from ai_gateway.routing.outcome import Outcome
from ai_gateway.routing.route import Deployment, Served

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Attempt(Generic[T]):
    """One running attempt of a hedged request."""

    deployment: Deployment
    probe: bool
    started: float
    task: "asyncio.Task[T]"
    watch: AttemptWatch | None = None

    def succeeded(self) -> None:
        """Tell the watch the attempt answered."""
        if self.watch is not None:
            self.watch.succeeded(self.task.result())

    def failed(self, error: BaseException) -> None:
        """Tell the watch the attempt failed or was cancelled."""
        if self.watch is not None:
            self.watch.failed(error)


class Hedger:
    """Serves hedged routes; holds the clean-up tasks of cancelled losers until they end."""

    def __init__(
        self, breakers: BreakerBoard, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.breakers = breakers
        self._clock = clock
        self._background: set[asyncio.Future[None]] = set()

    async def serve(
        self,
        plan: Attempts,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> Served[T]:
        """Attempts as tasks: another starts when the running one is slow; the first answer
        wins. The caller's own error (stop) waits while another attempt may still succeed."""
        running: list[Attempt[T]] = []
        stopped: GatewayError | None = None
        served: Served[T] | None = None
        try:
            while served is None:
                if not running:
                    if stopped is not None:
                        raise stopped
                    running.append(self._start(plan, await plan.next_turn(), attempt))
                wait, hedge = (None, None) if stopped else self._hedge_plan(plan, running)
                done, _ = await asyncio.wait(
                    [a.task for a in running], timeout=wait, return_when="FIRST_COMPLETED"
                )
                if not done:
                    if hedge is not None and self._may_hedge(plan, running, hedge):
                        log.info("hedge_started", slow=running[0].deployment.key, hedge=hedge.key)
                        running.append(self._start(plan, hedge, attempt, is_hedge=True))
                    continue
                served, stop = self._settle(plan, done, running)
                stopped = stopped or stop
            return served
        finally:
            await self._cancel(running, discard, winner=served)

    def _start(
        self,
        plan: Attempts,
        deployment: Deployment,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        *,
        is_hedge: bool = False,
    ) -> Attempt[T]:
        probe = plan.started(deployment)
        watch = plan.watch(deployment, is_hedge=is_hedge)
        task = asyncio.ensure_future(attempt(deployment, plan.remaining_s()))
        return Attempt(deployment, probe, self._clock(), task, watch)

    def _hedge_plan(
        self, plan: Attempts, running: list[Attempt[T]]
    ) -> tuple[float | None, Deployment | None]:
        """How long to wait before hedging, and with which deployment: once the running attempt
        is `hedge_after` old and the next deployment may start. (None, None): do not hedge."""
        hedge_after = plan.policy.hedge_after_s
        if hedge_after is None or len(running) != 1:
            return None, None
        upcoming = plan.next(busy={a.deployment.key for a in running})
        if upcoming is None or not self.breakers.get(upcoming[0].key).allows():
            return None, None  # never hedge onto an open circuit
        deployment, start_at = upcoming
        hedge_at = max(running[0].started + hedge_after, start_at)
        if hedge_at >= plan.deadline - MIN_ATTEMPT_S:
            return None, None
        return max(hedge_at - self._clock(), 0.0), deployment

    def _may_hedge(self, plan: Attempts, running: list[Attempt[T]], hedge: Deployment) -> bool:
        """Whether the planned hedge may still start now (the plan may have moved on)."""
        upcoming = plan.next(busy={a.deployment.key for a in running})
        return (
            upcoming is not None
            and upcoming[0] is hedge
            and upcoming[1] <= self._clock()
            and self.breakers.get(hedge.key).allows()
        )

    def _settle(
        self, plan: Attempts, done: set["asyncio.Task[T]"], running: list[Attempt[T]]
    ) -> tuple[Served[T] | None, GatewayError | None]:
        """Note every finished attempt; the winner (the first success), and a stop error."""
        finished_now = [a for a in running if a.task in done]
        for finished in finished_now:
            error = finished.task.exception()
            if error is not None and not isinstance(error, GatewayError):
                raise error  # a bug, not an upstream failure: _cancel releases every attempt
        served: Served[T] | None = None
        stopped: GatewayError | None = None
        for finished in finished_now:
            error = finished.task.exception()
            if error is None and served is None:
                running.remove(finished)
                plan.settle_success(finished.deployment, finished.probe)
                finished.succeeded()
                served = Served(finished.task.result(), finished.deployment, plan.count)
            elif isinstance(error, GatewayError):
                running.remove(finished)
                finished.failed(error)
                outcome = plan.settle_failure(finished.deployment, finished.probe, error)
                if outcome is Outcome.STOP:
                    stopped = stopped or error
        return served, stopped

    async def _cancel(
        self,
        running: list[Attempt[T]],
        discard: Callable[[T], Awaitable[None]] | None,
        *,
        winner: Served[T] | None,
    ) -> None:
        """Cancel the attempts still running (hedge losers) and release what they opened.

        The clean-up runs to its end even if the request itself is cancelled meanwhile; a winner
        that can no longer be returned is released too.
        """
        cleanup = self._keep(self._drain(list(running), discard))
        running.clear()
        try:
            await asyncio.shield(cleanup)
        except BaseException:
            if winner is not None and discard is not None:
                self._keep(self._release(discard, winner.value))
            raise

    async def _drain(
        self, attempts: list[Attempt[T]], discard: Callable[[T], Awaitable[None]] | None
    ) -> None:
        """Cancel and await every attempt; close what a finished loser opened."""
        for attempt in attempts:
            attempt.task.cancel()
        if attempts:
            await asyncio.wait([a.task for a in attempts])
        for attempt in attempts:
            self.breakers.get(attempt.deployment.key).released(probe=attempt.probe)
        for attempt in attempts:
            if attempt.task.cancelled():
                log.info("attempt_cancelled", deployment=attempt.deployment.key)
                attempt.failed(asyncio.CancelledError())
            elif (error := attempt.task.exception()) is not None:
                attempt.failed(error)
            else:
                attempt.succeeded()
                if discard is not None:
                    await self._release(discard, attempt.task.result())

    @staticmethod
    async def _release(discard: Callable[[T], Awaitable[None]], value: T) -> None:
        """Close what a losing attempt opened; a failure to close is logged, not raised."""
        try:
            await discard(value)
        except Exception:
            log.exception("attempt_release_failed")

    def _keep(self, work: Awaitable[None]) -> "asyncio.Future[None]":
        """Run `work` as a task the hedger holds until it ends (tasks are otherwise weakly held)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: "asyncio.Future[None]") -> None:
        """Drop a finished background task, logging (so retrieving) any failure."""
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background_cleanup_failed", error=type(error).__name__)

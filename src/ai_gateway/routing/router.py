"""Router: a model name -> its route, and serving a request over it with retries, fallbacks,
breakers, hedging and per-deployment timeouts.

An attempt ends at the first byte the caller could see: the whole completion, or a stream's first
chunk. Until then every failure is the router's to handle; after it, a stream is the caller's,
and its later failures end it with an error event (api/streaming.py).
"""

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from math import inf
from typing import Generic, TypeVar

import structlog

from ai_gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    ModelNotFound,
    ProviderError,
    UpstreamTimeout,
)
from ai_gateway.providers.protocol import ChatProvider
from ai_gateway.providers.registry import Registry
from ai_gateway.routing.attempts import MIN_ATTEMPT_S, Attempts
from ai_gateway.routing.breaker import BreakerBoard
from ai_gateway.routing.outcome import Outcome, marks_unhealthy
from ai_gateway.routing.route import Deployment, Policy, Route, Timeouts
from ai_gateway.schemas import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

log = structlog.get_logger(__name__)

T = TypeVar("T")
MAX_LISTED_ALIASES = 20
Chunks = AsyncGenerator[ChatCompletionChunk, None]


@dataclass(frozen=True, slots=True)
class OpenedStream:
    """A stream whose first chunk has arrived (None: the upstream sent no chunk at all).

    `rest` is what the caller reads; `upstream` the provider's own iterator under it, closed
    explicitly when the stream is dropped (a wrapper that never started cannot close it).
    """

    first: ChatCompletionChunk | None
    rest: Chunks
    upstream: Chunks

    async def aclose(self) -> None:
        """Drop the stream and release its upstream connection."""
        await self.rest.aclose()
        await self.upstream.aclose()


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """What answered, and how many attempts it took."""

    value: T
    deployment: Deployment
    attempts: int


@dataclass(slots=True)
class Attempt(Generic[T]):
    """One running attempt of a hedged request."""

    deployment: Deployment
    probe: bool
    started: float
    task: "asyncio.Task[T]"


def timed_out(
    deployment: Deployment,
    what: str,
    seconds: float,
    *,
    remaining_s: float,
    deadline_s: float = inf,
) -> ProviderError:
    """An attempt over its limit: the deployment's own, or what was left of the request's
    deadline (`deadline_s`, the whole request's time)."""
    if seconds >= remaining_s:
        return DeadlineExceeded(
            f"{deployment.key} gave no {what} within the request's time limit of "
            f"{round(deadline_s, 2):g} s"
        )
    return UpstreamTimeout(f"{deployment.key} gave no {what} within {round(seconds, 2):g} s")


def limit_s(remaining_s: float, *limits: float | None) -> float:
    """The tightest of the set limits and the time left before the deadline."""
    return min([remaining_s, *(value for value in limits if value is not None)])


async def within_total(chunks: Chunks, deployment: Deployment, deadline: float) -> Chunks:
    """The rest of a stream, ended with a timeout error once the deployment's total is spent."""
    async with aclosing(chunks):
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                total = deployment.timeouts.total_s or 0.0
                raise timed_out(deployment, "complete answer", total, remaining_s=inf) from None
            if chunk is None:
                return
            yield chunk


class Router:
    """Serves chat requests over aliases and `provider/model` routes."""

    def __init__(
        self,
        registry: Registry,
        *,
        aliases: Mapping[str, Route],
        policy: Policy,
        timeouts: Timeouts,
        breakers: BreakerBoard,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.aliases = dict(aliases)
        self.policy = policy
        self.timeouts = timeouts
        self.breakers = breakers
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  # spreading load, not secrets
        self._variants: dict[str, ChatProvider] = {}
        self._background: set[asyncio.Future[None]] = set()

    def route(self, model: str) -> Route:
        """The route for a unified-route model: an alias, else `provider/model`."""
        alias = self.aliases.get(model)
        if alias is not None:
            return alias
        if "/" not in model and self.aliases:
            known = ", ".join(sorted(self.aliases)[:MAX_LISTED_ALIASES])
            raise ModelNotFound(
                f"Model '{model[:200]}' is neither an alias ({known}) nor '<provider>/<model>'.",
                param="model",
            )
        provider, model_id = self.registry.resolve(model)
        return self.direct(provider, model_id)

    def direct(self, provider: ChatProvider, model: str) -> Route:
        """One deployment with the routing defaults (`provider/model`, or the provider's own
        route `/{provider}/v1/chat/completions`)."""
        deployment = Deployment(self._with_connect(provider), model, timeouts=self.timeouts)
        return Route(f"{provider.name}/{model}", (deployment,), self.policy)

    def _with_connect(self, provider: ChatProvider) -> ChatProvider:
        """The provider with the default connect timeout, made once per provider."""
        if self.timeouts.connect_s is None:
            return provider
        variant = self._variants.get(provider.name)
        if variant is None:
            variant = self._variants[provider.name] = provider.with_connect_timeout(
                self.timeouts.connect_s
            )
        return variant

    async def complete(
        self, route: Route, req: ChatCompletionRequest
    ) -> Served[ChatCompletionResponse]:
        """One completion from the first deployment that answers."""
        deadline_s = route.policy.deadline_s

        async def attempt(deployment: Deployment, remaining_s: float) -> ChatCompletionResponse:
            limit = limit_s(remaining_s, deployment.timeouts.total_s)
            try:
                async with asyncio.timeout(limit):
                    return await deployment.provider.chat_completions(
                        for_deployment(req, deployment)
                    )
            except TimeoutError:
                raise timed_out(
                    deployment, "answer", limit, remaining_s=remaining_s, deadline_s=deadline_s
                ) from None

        return await self._serve(route, attempt, discard=None)

    async def open_stream(self, route: Route, req: ChatCompletionRequest) -> Served[OpenedStream]:
        """A stream from the first deployment whose first chunk arrives."""
        deadline_s = route.policy.deadline_s

        async def attempt(deployment: Deployment, remaining_s: float) -> OpenedStream:
            limits = deployment.timeouts
            started = asyncio.get_running_loop().time()
            limit = limit_s(remaining_s, limits.first_byte_s, limits.total_s)
            chunks = deployment.provider.stream_chat_completions(for_deployment(req, deployment))
            try:
                async with asyncio.timeout(limit):
                    first = await anext(chunks, None)
            except TimeoutError:
                await chunks.aclose()
                raise timed_out(
                    deployment, "first byte", limit, remaining_s=remaining_s, deadline_s=deadline_s
                ) from None
            except BaseException:
                await chunks.aclose()
                raise
            if limits.total_s is None:
                return OpenedStream(first, chunks, chunks)
            rest = within_total(chunks, deployment, started + limits.total_s)
            return OpenedStream(first, rest, chunks)

        return await self._serve(route, attempt, discard=OpenedStream.aclose)

    async def _serve(
        self,
        route: Route,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        *,
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> Served[T]:
        """Run attempts until one succeeds: one at a time, or racing when the route hedges.

        A failure that ends the request carries the number of attempts made (`attempts`).
        """
        plan = Attempts(route, self.breakers, clock=self._clock, rng=self._rng)
        try:
            if plan.policy.hedge_after_s is None:
                return await self._serve_in_turn(plan, attempt)
            return await self._serve_hedged(plan, attempt, discard)
        except GatewayError as error:
            error.attempts = plan.count
            raise

    async def _serve_in_turn(
        self, plan: Attempts, attempt: Callable[[Deployment, float], Awaitable[T]]
    ) -> Served[T]:
        """One attempt after another, awaited in place (no task per attempt on the hot path)."""
        while True:
            deployment = await self._next_turn(plan)
            probe = plan.started(deployment)
            try:
                value = await attempt(deployment, plan.remaining_s())
            except GatewayError as error:
                if self._failed(plan, deployment, probe, error) is Outcome.STOP:
                    raise
                continue
            except BaseException:
                self.breakers.get(deployment.key).released(probe=probe)
                raise
            self.breakers.get(deployment.key).succeeded(probe=probe)
            return Served(value, deployment, plan.count)

    async def _serve_hedged(
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
                    running.append(self._start(plan, await self._next_turn(plan), attempt))
                wait, hedge = (None, None) if stopped else self._hedge_plan(plan, running)
                done, _ = await asyncio.wait(
                    [a.task for a in running], timeout=wait, return_when="FIRST_COMPLETED"
                )
                if not done:
                    if hedge is not None and self._may_hedge(plan, running, hedge):
                        log.info("hedge_started", slow=running[0].deployment.key, hedge=hedge.key)
                        running.append(self._start(plan, hedge, attempt))
                    continue
                served, stop = self._settle(plan, done, running)
                stopped = stopped or stop
            return served
        finally:
            await self._cancel(running, discard, winner=served)

    async def _next_turn(self, plan: Attempts) -> Deployment:
        """The next deployment, once its turn has come (backoff, Retry-After); when nothing is
        left to try, the most informative error."""
        upcoming = plan.next()
        if upcoming is None:
            raise plan.final_error()
        deployment, start_at = upcoming
        if start_at > self._clock():
            await asyncio.sleep(start_at - self._clock())
        return deployment

    def _start(
        self,
        plan: Attempts,
        deployment: Deployment,
        attempt: Callable[[Deployment, float], Awaitable[T]],
    ) -> Attempt[T]:
        probe = plan.started(deployment)
        task = asyncio.ensure_future(attempt(deployment, plan.remaining_s()))
        return Attempt(deployment, probe, self._clock(), task)

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
                self.breakers.get(finished.deployment.key).succeeded(probe=finished.probe)
                served = Served(finished.task.result(), finished.deployment, plan.count)
            elif isinstance(error, GatewayError):
                running.remove(finished)
                if self._failed(plan, finished.deployment, finished.probe, error) is Outcome.STOP:
                    stopped = stopped or error
        return served, stopped

    def _failed(
        self, plan: Attempts, deployment: Deployment, probe: bool, error: GatewayError
    ) -> Outcome:
        """Note a failed attempt on the plan and the deployment's breaker.

        Failures that say the deployment is unwell count against it; the caller's own error
        counts as healthy (the upstream answered); anything else (a 429, a parameter refused)
        only frees the probe.
        """
        breaker = self.breakers.get(deployment.key)
        outcome = plan.failed(deployment, error)
        if marks_unhealthy(error):
            breaker.failed(probe=probe)
        elif outcome is Outcome.STOP:
            breaker.succeeded(probe=probe)
        else:
            breaker.released(probe=probe)
        return outcome

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
            elif attempt.task.exception() is None and discard is not None:
                await self._release(discard, attempt.task.result())

    @staticmethod
    async def _release(discard: Callable[[T], Awaitable[None]], value: T) -> None:
        """Close what a losing attempt opened; a failure to close is logged, not raised."""
        try:
            await discard(value)
        except Exception:
            log.exception("attempt_release_failed")

    def _keep(self, work: Awaitable[None]) -> "asyncio.Future[None]":
        """Run `work` as a task the router holds until it ends (tasks are otherwise weakly held)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: "asyncio.Future[None]") -> None:
        """Drop a finished background task, logging (so retrieving) any failure."""
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background_cleanup_failed", error=type(error).__name__)


def for_deployment(req: ChatCompletionRequest, deployment: Deployment) -> ChatCompletionRequest:
    """The request as this deployment gets it: its model id, its parameter overrides."""
    return req.for_upstream(deployment.model, deployment.params)

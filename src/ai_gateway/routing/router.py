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
from typing import Any, Generic, TypeVar

import structlog

from ai_gateway.errors import GatewayError, ProviderError
from ai_gateway.providers.base import ChatProvider
from ai_gateway.providers.registry import Registry
from ai_gateway.routing.attempts import Attempts
from ai_gateway.routing.breaker import BreakerBoard
from ai_gateway.routing.outcome import Outcome, marks_unhealthy
from ai_gateway.routing.route import Deployment, Policy, Route, Timeouts
from ai_gateway.schemas import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

log = structlog.get_logger(__name__)

T = TypeVar("T")
Chunks = AsyncGenerator[ChatCompletionChunk, None]


@dataclass(frozen=True, slots=True)
class OpenedStream:
    """A stream whose first chunk has arrived (None: the upstream sent no chunk at all)."""

    first: ChatCompletionChunk | None
    rest: Chunks


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """What answered, and how many attempts it took."""

    value: T
    deployment: Deployment
    attempts: int


def timed_out(deployment: Deployment, what: str, seconds: float) -> ProviderError:
    """An attempt over one of its limits."""
    return ProviderError(
        f"{deployment.key} gave no {what} within {round(seconds, 2):g} s", code="upstream_timeout"
    )


async def within_total(chunks: Chunks, deployment: Deployment, deadline: float) -> Chunks:
    """The rest of a stream, ended with a timeout error once the deployment's total is spent."""
    async with aclosing(chunks):
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                total = deployment.timeouts.total_s or 0.0
                raise timed_out(deployment, "complete answer", total) from None
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

    def route(self, model: str) -> Route:
        """The route for a unified-route model: an alias, else `provider/model`."""
        alias = self.aliases.get(model)
        if alias is not None:
            return alias
        provider, model_id = self.registry.resolve(model)
        return self.direct(provider, model_id)

    def provider_route(self, provider_name: str, model: str) -> Route:
        """The route for `/{provider}/v1/chat/completions`: that provider's own model id."""
        return self.direct(self.registry.provider(provider_name), model)

    def direct(self, provider: ChatProvider, model: str) -> Route:
        """One deployment with the routing defaults."""
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

        async def attempt(deployment: Deployment, remaining_s: float) -> ChatCompletionResponse:
            limit = min(deployment.timeouts.total_s or remaining_s, remaining_s)
            try:
                async with asyncio.timeout(limit):
                    return await deployment.provider.chat_completions(
                        for_deployment(req, deployment)
                    )
            except TimeoutError:
                raise timed_out(deployment, "answer", limit) from None

        return await self._serve(route, attempt, discard=None)

    async def open_stream(self, route: Route, req: ChatCompletionRequest) -> Served[OpenedStream]:
        """A stream from the first deployment whose first chunk arrives."""

        async def attempt(deployment: Deployment, remaining_s: float) -> OpenedStream:
            limits = deployment.timeouts
            loop = asyncio.get_running_loop()
            started = loop.time()
            first_limit = min(limits.first_byte_s or remaining_s, limits.total_s or remaining_s)
            first_limit = min(first_limit, remaining_s)
            chunks = deployment.provider.stream_chat_completions(for_deployment(req, deployment))
            try:
                async with asyncio.timeout(first_limit):
                    first = await anext(chunks, None)
            except TimeoutError:
                await chunks.aclose()
                raise timed_out(deployment, "first byte", first_limit) from None
            except BaseException:
                await chunks.aclose()
                raise
            if limits.total_s is not None:
                chunks = within_total(chunks, deployment, started + limits.total_s)
            return OpenedStream(first, chunks)

        async def discard(opened: OpenedStream) -> None:
            await opened.rest.aclose()

        return await self._serve(route, attempt, discard=discard)

    async def _serve(
        self,
        route: Route,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        *,
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> Served[T]:
        """Run attempts until one succeeds: one at a time, or racing when the route hedges."""
        plan = Attempts(route, self.breakers, clock=self._clock, rng=self._rng)
        if plan.policy.hedge_after_s is None:
            return await self._serve_in_turn(plan, attempt)
        return await self._serve_hedged(plan, attempt, discard)

    async def _serve_in_turn(
        self, plan: Attempts, attempt: Callable[[Deployment, float], Awaitable[T]]
    ) -> Served[T]:
        """One attempt after another, awaited in place (no task per attempt on the hot path)."""
        while True:
            deployment = await self._next_turn(plan)
            plan.started(deployment)
            breaker = self.breakers.get(deployment.key)
            try:
                value = await attempt(deployment, plan.remaining_s())
            except GatewayError as error:
                self._failed(plan, deployment, error)
                continue
            except BaseException:
                breaker.released()
                raise
            breaker.succeeded()
            return Served(value, deployment, plan.count)

    async def _serve_hedged(
        self,
        plan: Attempts,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> Served[T]:
        """Attempts as tasks: a second one starts when the first is slow; the first answer wins."""
        running: dict[asyncio.Task[T], tuple[Deployment, float]] = {}
        try:
            while True:
                if not running:
                    self._start(plan, await self._next_turn(plan), attempt, running)
                done, _ = await asyncio.wait(
                    running, timeout=self._hedge_wait(plan, running), return_when="FIRST_COMPLETED"
                )
                if not done:
                    self._hedge(plan, attempt, running)
                    continue
                served = self._settle(plan, done, running)
                if served is not None:
                    return served
        finally:
            await self._cancel(running, discard)

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
        running: dict[asyncio.Task[T], tuple[Deployment, float]],
    ) -> None:
        plan.started(deployment)
        task = asyncio.ensure_future(attempt(deployment, plan.remaining_s()))
        running[task] = (deployment, self._clock())

    def _hedge_wait(
        self, plan: Attempts, running: Mapping[asyncio.Task[Any], tuple[Deployment, float]]
    ) -> float | None:
        """How long to wait before hedging; None when this request will not hedge now."""
        hedge_after = plan.policy.hedge_after_s
        if hedge_after is None or len(running) != 1:
            return None
        upcoming = plan.next(busy={d.key for d, _ in running.values()})
        if upcoming is None or upcoming[1] > self._clock():
            return None
        [(_, started)] = running.values()
        return max(started + hedge_after - self._clock(), 0.0)

    def _hedge(
        self,
        plan: Attempts,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        running: dict[asyncio.Task[T], tuple[Deployment, float]],
    ) -> None:
        """Start the same request on the next deployment, racing the one still running."""
        upcoming = plan.next(busy={d.key for d, _ in running.values()})
        if upcoming is None:
            return
        slow = next(iter(running.values()))[0]
        log.info("hedge_started", slow=slow.key, hedge=upcoming[0].key)
        self._start(plan, upcoming[0], attempt, running)

    def _settle(
        self,
        plan: Attempts,
        done: set[asyncio.Task[T]],
        running: dict[asyncio.Task[T], tuple[Deployment, float]],
    ) -> Served[T] | None:
        """The winner among finished attempts, if one succeeded; failures are noted."""
        for task in done:
            deployment, _ = running.pop(task)
            error = task.exception()
            if error is None:
                self.breakers.get(deployment.key).succeeded()
                return Served(task.result(), deployment, plan.count)
            if not isinstance(error, GatewayError):
                self.breakers.get(deployment.key).released()
                raise error
            self._failed(plan, deployment, error)
        return None

    def _failed(self, plan: Attempts, deployment: Deployment, error: GatewayError) -> None:
        """Note a failed attempt on the plan and the breaker; the caller's errors stop here."""
        outcome = plan.failed(deployment, error)
        breaker = self.breakers.get(deployment.key)
        if marks_unhealthy(error):
            breaker.failed()
        elif outcome is Outcome.STOP:
            breaker.succeeded()  # the upstream answered; the request was at fault
        else:
            breaker.released()
        if outcome is Outcome.STOP:
            raise error

    async def _cancel(
        self,
        running: dict[asyncio.Task[T], tuple[Deployment, float]],
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> None:
        """Cancel the attempts still running (hedge losers); release what they opened."""
        if not running:
            return
        for task in running:
            task.cancel()
        try:
            await asyncio.wait(running)
        finally:
            for task, (deployment, _) in running.items():
                self.breakers.get(deployment.key).released()
                if task.cancelled():
                    log.info("attempt_cancelled", deployment=deployment.key)
                elif task.exception() is None and discard is not None:
                    await discard(task.result())
            running.clear()


def for_deployment(req: ChatCompletionRequest, deployment: Deployment) -> ChatCompletionRequest:
    """The request as this deployment gets it: its model id, its parameter overrides."""
    return req.for_upstream(deployment.model, deployment.params)

"""Router: a model name -> its route, and serving a request over it with retries, fallbacks,
breakers and per-deployment timeouts (hedged routes race their attempts in routing/hedging.py).

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
from typing import TypeVar

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
from ai_gateway.routing.attempts import Attempts, AttemptWatcher
from ai_gateway.routing.breaker import BreakerBoard
from ai_gateway.routing.hedging import Hedger
from ai_gateway.routing.outcome import Outcome
from ai_gateway.routing.route import Deployment, Policy, Route, Served, Timeouts
from ai_gateway.schemas import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

log = structlog.get_logger(__name__)

T = TypeVar("T")
MAX_LISTED_ALIASES = 20
MAX_DIRECT_ROUTES = 1024
"""How many `provider/model` routes the router keeps made (all are dropped when it is full)."""
Chunks = AsyncGenerator[list[ChatCompletionChunk], None]
"""A stream's chunks, a list of those that arrived together."""


@dataclass(frozen=True, slots=True)
class OpenedStream:
    """A stream whose first chunks have arrived (None: the upstream sent no chunk at all).

    `rest` is what the caller reads; `upstream` the provider's own iterator under it, closed
    explicitly when the stream is dropped (a wrapper that never started cannot close it).
    """

    first: list[ChatCompletionChunk] | None
    rest: Chunks
    upstream: Chunks

    async def aclose(self) -> None:
        """Drop the stream and release its upstream connection."""
        await self.rest.aclose()
        await self.upstream.aclose()


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
                    arrived = await anext(chunks, None)
            except TimeoutError:
                total = deployment.timeouts.total_s or 0.0
                raise timed_out(deployment, "complete answer", total, remaining_s=inf) from None
            if arrived is None:
                return
            yield arrived


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
        transport_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """`transport_s`: every attempt's bound for a whole answer or a stream's first chunks
        (REQUEST_TIMEOUT_S), besides the deadline and the deployment's own limits: the one
        timer of an attempt is the router's (the transports bound only each read)."""
        self.registry = registry
        self.aliases = dict(aliases)
        self.policy = policy
        self.timeouts = timeouts
        self.breakers = breakers
        self.transport_s = transport_s
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  # spreading load, not secrets
        self._variants: dict[str, ChatProvider] = {}
        self._direct: dict[tuple[str, str], Route] = {}
        self._hedger = Hedger(breakers, clock=clock)
        self._watcher: AttemptWatcher | None = None

    def watch(self, watcher: AttemptWatcher) -> None:
        """Tell `watcher` of every upstream attempt from now on (metrics, traces)."""
        self._watcher = watcher

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
        route `/{provider}/v1/chat/completions`), made once per provider and model (up to
        MAX_DIRECT_ROUTES kept: callers choose the model names)."""
        route = self._direct.get((provider.name, model))
        if route is None:
            deployment = Deployment(self._with_connect(provider), model, timeouts=self.timeouts)
            route = Route(f"{provider.name}/{model}", (deployment,), self.policy)
            if len(self._direct) >= MAX_DIRECT_ROUTES:
                self._direct.clear()
            self._direct[(provider.name, model)] = route
        return route

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
            limit = limit_s(remaining_s, deployment.timeouts.total_s, self.transport_s)
            try:
                async with asyncio.timeout(limit):
                    return await deployment.provider.chat_completions(
                        for_deployment(req, deployment)
                    )
            except TimeoutError:
                raise timed_out(
                    deployment, "answer", limit, remaining_s=remaining_s, deadline_s=deadline_s
                ) from None

        return await self._serve(route, req, attempt, discard=None)

    async def open_stream(self, route: Route, req: ChatCompletionRequest) -> Served[OpenedStream]:
        """A stream from the first deployment whose first chunks arrive."""
        deadline_s = route.policy.deadline_s

        async def attempt(deployment: Deployment, remaining_s: float) -> OpenedStream:
            limits = deployment.timeouts
            started = asyncio.get_running_loop().time()
            limit = limit_s(remaining_s, limits.first_byte_s, limits.total_s, self.transport_s)
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

        return await self._serve(route, req, attempt, discard=OpenedStream.aclose)

    async def _serve(
        self,
        route: Route,
        req: ChatCompletionRequest,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        *,
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> Served[T]:
        """Run attempts until one succeeds: one at a time, or racing when the route hedges.

        A failure that ends the request carries the number of attempts made (`attempts`).
        """
        plan = Attempts(
            route,
            self.breakers,
            clock=self._clock,
            rng=self._rng,
            watcher=self._watcher,
            request=req,
        )
        try:
            if plan.policy.hedge_after_s is None:
                return await self._serve_in_turn(plan, attempt)
            return await self._hedger.serve(plan, attempt, discard)
        except GatewayError as error:
            error.attempts = plan.count
            raise

    async def _serve_in_turn(
        self, plan: Attempts, attempt: Callable[[Deployment, float], Awaitable[T]]
    ) -> Served[T]:
        """One attempt after another, awaited in place (no task per attempt on the hot path)."""
        while True:
            deployment = await plan.next_turn()
            probe = plan.started(deployment)
            watch = plan.watch(deployment)
            try:
                value = await attempt(deployment, plan.remaining_s())
            except BaseException as error:
                if watch is not None:
                    watch.failed(error)
                if not isinstance(error, GatewayError):
                    plan.release(deployment, probe)
                    raise
                if plan.settle_failure(deployment, probe, error) is Outcome.STOP:
                    raise
                continue
            plan.settle_success(deployment, probe)
            if watch is not None:
                watch.succeeded(value)
            return Served(value, deployment, plan.count)


def for_deployment(req: ChatCompletionRequest, deployment: Deployment) -> ChatCompletionRequest:
    """The request as this deployment gets it: its model id, its parameter overrides."""
    return req.for_upstream(deployment.model, deployment.params)

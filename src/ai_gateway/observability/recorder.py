"""MetricsObserver: each finished request, each upstream attempt and each breaker change as
Prometheus samples. The work per request is a handful of dict look-ups and increments."""

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from ai_gateway.api.record import RequestRecord
from ai_gateway.observability.labels import NONE, OTHER, ErrorTypes, NameBound, status_label
from ai_gateway.observability.labels import rejection_reason as reason_of
from ai_gateway.observability.metrics import GatewayMetrics
from ai_gateway.observability.observer import Headers
from ai_gateway.routing.attempts import AttemptKind, AttemptWatch
from ai_gateway.routing.breaker import State
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.schemas import ChatCompletionRequest

CHAT = "chat"
INPUT, OUTPUT = "input", "output"
SUCCESS, FAILURE, CANCELLED = "success", "failure", "cancelled"
BREAKER_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}
# How often a worker that serves requests updates its ledger lag gauges.
LAG_REFRESH_S = 1.0


class LagSource(Protocol):
    """The usage ledger's shipping lag."""

    def lag(self) -> tuple[int, float]:
        """(journal bytes not yet shipped, seconds since the shipper last caught up)."""
        ...


def is_success(record: RequestRecord) -> bool:
    """Whether the request was answered without an error (a stream: to its end)."""
    status = record.status
    return (
        status is not None
        and status < 400
        and record.error_code is None
        and not record.is_client_closed
    )


class MetricsObserver:
    """The RequestObserver (and AttemptWatcher) behind /metrics."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        names: NameBound,
        models: NameBound,
        errors: ErrorTypes,
        key_labels: bool,
        lag: LagSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.names = names
        self.models = models
        self.errors = errors
        self.key_labels = key_labels
        self.lag = lag
        self._clock = clock
        self._next_lag_refresh = 0.0

    def started(self, record: RequestRecord, headers: Headers) -> None:
        """Nothing to count before the request has ended."""

    def finished(self, record: RequestRecord) -> None:
        """Count the request: status, the gateway's time, GenAI figures, rejection, cost."""
        ok = is_success(record)
        route = self.names.value(record.route, learn=ok)
        metrics, caller = self.metrics, record.caller
        status = status_label(record)
        if self.key_labels:
            key_id = caller.key_id if caller is not None else NONE
            metrics.requests(route, status, key_id).inc()
        else:
            metrics.requests(route, status).inc()
        if record.gateway_ms is not None:
            metrics.added_latency(route).observe(record.gateway_ms / 1000)
        if record.is_rejected:
            metrics.rejections(reason_of(record.error_code)).inc()
        elif record.route is not None:
            self._genai(record, route, ok)
        if record.entry_id is not None:
            self._cost(record)
        if self.lag is not None and self._clock() >= self._next_lag_refresh:
            self.refresh_lag()

    def _genai(self, record: RequestRecord, route: str, ok: bool) -> None:
        """The semantic conventions' request duration, tokens and stream timings."""
        metrics, usage = self.metrics, record.usage
        labels = (CHAT, record.provider or NONE, route, self.models.value(record.model, learn=ok))
        elapsed_s = record.elapsed_ms() / 1000
        metrics.request_duration(*labels, self.errors.of_record(record)).observe(elapsed_s)
        if usage is not None:
            metrics.token_usage(*labels, INPUT).observe(usage.prompt_tokens)
            metrics.token_usage(*labels, OUTPUT).observe(usage.completion_tokens)
        if ok and record.is_stream and record.first_byte_ms is not None:
            first_s = record.first_byte_ms / 1000
            metrics.time_to_first_token(*labels).observe(first_s)
            if usage is not None and usage.completion_tokens > 1:
                per_token = max(elapsed_s - first_s, 0.0) / (usage.completion_tokens - 1)
                metrics.time_per_output_token(*labels).observe(per_token)

    def _cost(self, record: RequestRecord) -> None:
        """Spend by team (and key), or one more request whose price is unknown."""
        caller, cost = record.caller, record.cost_usd
        if cost is not None:
            team = (caller.team if caller is not None else None) or NONE
            if self.key_labels:
                key_id = caller.key_id if caller is not None else NONE
                self.metrics.cost(team, key_id).inc(cost)
            else:
                self.metrics.cost(team).inc(cost)
        elif record.usage is not None and record.provider is not None:
            model = self.models.value(record.model)
            self.metrics.unpriced(record.provider, model).inc()

    def refresh_lag(self) -> None:
        """Read the ledger's lag into its gauges."""
        self._next_lag_refresh = self._clock() + LAG_REFRESH_S
        if self.lag is not None:
            unshipped, seconds = self.lag.lag()
            self.metrics.ledger_unshipped().set(unshipped)
            self.metrics.ledger_lag().set(seconds)

    def breaker_changed(self, deployment: str, state: State) -> None:
        """A breaker's new state, for deployments with a label of their own."""
        label = self.names.value(deployment)
        if label != OTHER:
            self.metrics.breaker_state(label).set(BREAKER_VALUES[state])


class AttemptMetrics:
    """The AttemptWatcher behind the attempt, fallback and hedge metrics."""

    def __init__(self, metrics: GatewayMetrics, *, names: NameBound, errors: ErrorTypes) -> None:
        self.metrics = metrics
        self.names = names
        self.errors = errors

    def started(
        self,
        route: Route,
        deployment: Deployment,
        request: ChatCompletionRequest | None,
        kind: AttemptKind,
    ) -> AttemptWatch:
        """Count a fallback or a hedge; time the attempt."""
        if kind is AttemptKind.FALLBACK or kind is AttemptKind.HEDGE:
            family = self.metrics.fallbacks if kind is AttemptKind.FALLBACK else self.metrics.hedges
            family(self.names.value(route.name), self.names.value(deployment.key)).inc()
        return AttemptTimer(self, deployment.key, time.perf_counter())

    def ended(self, deployment: str, started: float, error: BaseException | None) -> None:
        """Count an attempt and its duration by outcome."""
        seconds = time.perf_counter() - started
        if error is None:
            outcome, error_type = SUCCESS, ""
        else:
            outcome = CANCELLED if isinstance(error, asyncio.CancelledError) else FAILURE
            error_type = self.errors.of_error(error)
        label = self.names.value(deployment, learn=error is None)
        self.metrics.attempts(label, outcome, error_type).inc()
        self.metrics.attempt_duration(label, outcome).observe(seconds)


class AttemptTimer:
    """One attempt, as the metrics see it."""

    __slots__ = ("deployment", "owner", "started")

    def __init__(self, owner: AttemptMetrics, deployment: str, started: float) -> None:
        self.owner = owner
        self.deployment = deployment
        self.started = started

    def succeeded(self, value: object) -> None:
        """Count a success."""
        self.owner.ended(self.deployment, self.started, None)

    def failed(self, error: BaseException) -> None:
        """Count a failure or a cancellation."""
        self.owner.ended(self.deployment, self.started, error)

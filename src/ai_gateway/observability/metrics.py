"""GatewayMetrics: every Prometheus metric the gateway exports, with the OpenTelemetry GenAI
semantic conventions' names (in their Prometheus form), units and bucket boundaries where they
define one, and the gateway's own under `ai_gateway_`.

A request updates plain cells (an add to a float, a bisect into a bucket list: no lock, the event
loop is the only writer); prometheus-client turns them into its metric families when /metrics is
scraped, and renders the exposition. With several workers each worker also writes its cells to
a file the scraping worker adds up (observability/shared.py).

Boundaries: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/
"""

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from typing import Any, Generic, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TIME_PER_OUTPUT_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
ADDED_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""The gateway's own time: sub-millisecond to a second."""

GENAI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)


class CounterCell:
    """A counter's value for one set of label values."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (not negative)."""
        self.value += amount

    def state(self) -> float:
        """The value, as a worker's file holds it."""
        return self.value


class GaugeCell(CounterCell):
    """A gauge's value for one set of label values."""

    __slots__ = ()

    def set(self, value: float) -> None:
        """Set the value."""
        self.value = float(value)


class HistogramCell:
    """A histogram's bucket counts (not cumulative; the last one past every bound) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation in the first bucket whose bound is at least `value`."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def state(self) -> list[Any]:
        """[counts, sum], as a worker's file holds it."""
        return [self.counts, self.sum]


class Kind(Enum):
    """A metric's type, and how several workers' values add up."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE_MAX = "gauge_max"
    """A gauge: the largest of the live workers' values."""
    GAUGE_SUM = "gauge_sum"
    """A gauge: the sum of the live workers' values."""


C = TypeVar("C", CounterCell, GaugeCell, HistogramCell)


class Family(Generic[C]):
    """A metric: its name, help, label names and a cell per set of label values (bounded by
    the labels' own bounds: observability/labels.py)."""

    def __init__(
        self,
        kind: Kind,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.unit = unit
        self.bounds = tuple(float(bound) for bound in buckets)
        self.bucket_names = tuple(
            floatToGoString(bound)  # type: ignore[no-untyped-call]  # untyped upstream
            for bound in (*self.bounds, float("inf"))
        )
        self.cells: dict[tuple[str, ...], C] = {}
        if not self.labels:  # exported from the start, as prometheus-client does
            self.cells[()] = self._new_cell()

    def __call__(self, *values: str) -> C:
        """The cell for these label values."""
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = self._new_cell()
        return cell

    def _new_cell(self) -> C:
        cell: CounterCell | HistogramCell
        if self.kind is Kind.HISTOGRAM:
            cell = HistogramCell(self.bounds)
        elif self.kind is Kind.COUNTER:
            cell = CounterCell()
        else:
            cell = GaugeCell()
        return cell  # type: ignore[return-value]  # the kind decides the cell: C is bound to it

    def states(self) -> list[list[Any]]:
        """[label values, state] of every cell, as a worker's file holds them."""
        return [[list(values), cell.state()] for values, cell in self.cells.items()]

    def metric(self, states: Mapping[tuple[str, ...], Any]) -> Metric:
        """prometheus-client's family for these states (label values to a value, or to a
        histogram's [counts, sum])."""
        if self.kind is Kind.HISTOGRAM:
            histogram = HistogramMetricFamily(
                self.name, self.documentation, labels=self.labels, unit=self.unit
            )
            for values, (counts, total) in states.items():
                histogram.add_metric(list(values), self._cumulative(counts), total)
            return histogram
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind is Kind.COUNTER:
            family = CounterMetricFamily(
                self.name, self.documentation, labels=self.labels, unit=self.unit
            )
        else:
            family = GaugeMetricFamily(
                self.name, self.documentation, labels=self.labels, unit=self.unit
            )
        for values, value in states.items():
            family.add_metric(list(values), value)
        return family

    def _cumulative(self, counts: list[int]) -> list[tuple[str, float]]:
        """Bucket counts as the exposition gives them: cumulative, by upper bound."""
        buckets, running = [], 0
        for name, count in zip(self.bucket_names, counts, strict=True):
            running += count
            buckets.append((name, float(running)))
        return buckets

    def own_states(self) -> dict[tuple[str, ...], Any]:
        """This process's states by label values."""
        return {values: cell.state() for values, cell in self.cells.items()}


class GatewayMetrics:
    """The metrics, and the prometheus-client collector that reads them at a scrape."""

    def __init__(self, *, key_labels: bool) -> None:
        caller = ("key_id",) if key_labels else ()
        self.token_usage = Family[HistogramCell](
            Kind.HISTOGRAM,
            "gen_ai_client_token_usage",
            "Input and output tokens per chat request (gen_ai.client.token.usage).",
            [*GENAI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
        )
        self.request_duration = Family[HistogramCell](
            Kind.HISTOGRAM,
            "gen_ai_server_request_duration",
            "Chat request duration to the last byte (gen_ai.server.request.duration).",
            [*GENAI_LABELS, "error_type"],
            unit="seconds",
            buckets=DURATION_BUCKETS,
        )
        self.time_to_first_token = Family[HistogramCell](
            Kind.HISTOGRAM,
            "gen_ai_server_time_to_first_token",
            "Time to a successful stream's first event (gen_ai.server.time_to_first_token).",
            GENAI_LABELS,
            unit="seconds",
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
        )
        self.time_per_output_token = Family[HistogramCell](
            Kind.HISTOGRAM,
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, successful streams "
            "(gen_ai.server.time_per_output_token).",
            GENAI_LABELS,
            unit="seconds",
            buckets=TIME_PER_OUTPUT_TOKEN_BUCKETS,
        )
        self.requests = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_requests_total",
            "HTTP requests by route (alias or provider/model; none off the chat routes) "
            "and status code (499: the caller left first).",
            ["route", "status_code", *caller],
        )
        self.added_latency = Family[HistogramCell](
            Kind.HISTOGRAM,
            "ai_gateway_added_latency",
            "The gateway's own time to the response head, the upstream's excluded.",
            ["route"],
            unit="seconds",
            buckets=ADDED_LATENCY_BUCKETS,
        )
        self._attempt_metrics()
        self._ledger_metrics(caller)

    def _attempt_metrics(self) -> None:
        """Upstream attempts, fallbacks, hedges, breakers."""
        self.attempts = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_upstream_attempts_total",
            "Upstream attempts by deployment and outcome (success, failure, cancelled).",
            ["deployment", "outcome", "error_type"],
        )
        self.attempt_duration = Family[HistogramCell](
            Kind.HISTOGRAM,
            "ai_gateway_upstream_attempt_duration",
            "Upstream attempt duration (to the completion, or a stream's first chunk).",
            ["deployment", "outcome"],
            unit="seconds",
            buckets=DURATION_BUCKETS,
        )
        self.fallbacks = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_fallbacks_total",
            "Attempts on another deployment than the previous attempt's.",
            ["route", "deployment"],
        )
        self.hedges = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_hedges_total",
            "Hedge attempts started beside a slow one.",
            ["route", "deployment"],
        )
        self.breaker_state = Family[GaugeCell](
            Kind.GAUGE_MAX,
            "ai_gateway_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (several "
            "workers: the worst).",
            ["deployment"],
        )

    def _ledger_metrics(self, caller: tuple[str, ...]) -> None:
        """Limits, budgets, cost and the usage ledger."""
        self.rejections = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_rejections_total",
            "Requests refused by a rate limit or a budget before any upstream call.",
            ["reason"],
        )
        self.cost = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_cost_usd_total",
            "Spend in USD of settled requests with a known price, by team.",
            ["team", *caller],
        )
        self.budget_soft_limits = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_budget_soft_limit_reached_total",
            "Budgets whose soft threshold (BUDGET_SOFT_THRESHOLD) was crossed, once per "
            "budget and period, by the key or team holding it.",
            ["scope"],
        )
        self.unpriced = Family[CounterCell](
            Kind.COUNTER,
            "ai_gateway_unpriced_requests_total",
            "Requests with token usage but no known price.",
            ["provider", "model"],
        )
        self.ledger_unshipped = Family[GaugeCell](
            Kind.GAUGE_SUM,
            "ai_gateway_ledger_unshipped",
            "Usage journal bytes not yet shipped to the database.",
            unit="bytes",
        )
        self.ledger_lag = Family[GaugeCell](
            Kind.GAUGE_MAX,
            "ai_gateway_ledger_lag",
            "Seconds since the usage shipper last caught up with the journal.",
            unit="seconds",
        )

    @property
    def families(self) -> tuple["Family[Any]", ...]:
        """Every metric."""
        return tuple(value for value in vars(self).values() if isinstance(value, Family))

    def collect(self) -> Iterator[Metric]:
        """This process's metrics (prometheus-client's collector protocol)."""
        for family in self.families:
            yield family.metric(family.own_states())

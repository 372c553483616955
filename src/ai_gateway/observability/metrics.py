"""GatewayMetrics: every Prometheus metric the gateway exports, with the OpenTelemetry GenAI
semantic conventions' names (in their Prometheus form), units and bucket boundaries where they
define one, and the gateway's own under `ai_gateway_`.

Boundaries: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/
"""

from typing import Generic, Protocol, Self, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
# A family's cached children before the cache starts over (values are bounded anyway).
MAX_CACHED_CHILDREN = 4096


class Labelled(Protocol):
    """A prometheus-client metric with labels."""

    def labels(self, *values: str) -> Self:
        """The child for these label values."""
        ...


M = TypeVar("M", bound=Labelled)


class Family(Generic[M]):
    """A labelled metric whose children are kept by label values: the lookup is one dict get,
    instead of prometheus-client's checks, conversions and lock on every `labels()` call."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            if len(self._children) >= MAX_CACHED_CHILDREN:
                self._children.clear()
            child = self._children[values] = self.metric.labels(*values)
        return child


class GatewayMetrics:
    """The metrics, registered in `registry` (None in multiprocess mode: the values go to the
    shared directory's files and /metrics reads them from there)."""

    def __init__(self, registry: CollectorRegistry | None, *, key_labels: bool) -> None:
        caller = ("key_id",) if key_labels else ()
        self.token_usage = Family(
            Histogram(
                "gen_ai_client_token_usage",
                "Input and output tokens per chat request (gen_ai.client.token.usage).",
                [*GENAI_LABELS, "gen_ai_token_type"],
                buckets=TOKEN_BUCKETS,
                registry=registry,
            )
        )
        self.request_duration = Family(
            Histogram(
                "gen_ai_server_request_duration",
                "Chat request duration to the last byte (gen_ai.server.request.duration).",
                [*GENAI_LABELS, "error_type"],
                unit="seconds",
                buckets=DURATION_BUCKETS,
                registry=registry,
            )
        )
        self.time_to_first_token = Family(
            Histogram(
                "gen_ai_server_time_to_first_token",
                "Time to a successful stream's first event (gen_ai.server.time_to_first_token).",
                GENAI_LABELS,
                unit="seconds",
                buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
                registry=registry,
            )
        )
        self.time_per_output_token = Family(
            Histogram(
                "gen_ai_server_time_per_output_token",
                "Time per output token after the first, successful streams "
                "(gen_ai.server.time_per_output_token).",
                GENAI_LABELS,
                unit="seconds",
                buckets=TIME_PER_OUTPUT_TOKEN_BUCKETS,
                registry=registry,
            )
        )
        self.requests = Family(
            Counter(
                "ai_gateway_requests_total",
                "HTTP requests by route (alias or provider/model; none off the chat routes) "
                "and status code (499: the caller left first).",
                ["route", "status_code", *caller],
                registry=registry,
            )
        )
        self.added_latency = Family(
            Histogram(
                "ai_gateway_added_latency",
                "The gateway's own time to the response head, the upstream's excluded.",
                ["route"],
                unit="seconds",
                buckets=ADDED_LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self._attempt_metrics(registry)
        self._ledger_metrics(registry, caller)

    def _attempt_metrics(self, registry: CollectorRegistry | None) -> None:
        """Upstream attempts, fallbacks, hedges, breakers."""
        self.attempts = Family(
            Counter(
                "ai_gateway_upstream_attempts_total",
                "Upstream attempts by deployment and outcome (success, failure, cancelled).",
                ["deployment", "outcome", "error_type"],
                registry=registry,
            )
        )
        self.attempt_duration = Family(
            Histogram(
                "ai_gateway_upstream_attempt_duration",
                "Upstream attempt duration (to the completion, or a stream's first chunk).",
                ["deployment", "outcome"],
                unit="seconds",
                buckets=DURATION_BUCKETS,
                registry=registry,
            )
        )
        self.fallbacks = Family(
            Counter(
                "ai_gateway_fallbacks_total",
                "Attempts on another deployment than the previous attempt's.",
                ["route", "deployment"],
                registry=registry,
            )
        )
        self.hedges = Family(
            Counter(
                "ai_gateway_hedges_total",
                "Hedge attempts started beside a slow one.",
                ["route", "deployment"],
                registry=registry,
            )
        )
        self.breaker_state = Family(
            Gauge(
                "ai_gateway_breaker_state",
                "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (several "
                "workers: the worst).",
                ["deployment"],
                multiprocess_mode="livemax",
                registry=registry,
            )
        )

    def _ledger_metrics(self, registry: CollectorRegistry | None, caller: tuple[str, ...]) -> None:
        """Limits, budgets, cost and the usage ledger."""
        self.rejections = Family(
            Counter(
                "ai_gateway_rejections_total",
                "Requests refused by a rate limit or a budget before any upstream call.",
                ["reason"],
                registry=registry,
            )
        )
        self.cost = Family(
            Counter(
                "ai_gateway_cost_usd_total",
                "Spend in USD of settled requests with a known price, by team.",
                ["team", *caller],
                registry=registry,
            )
        )
        self.budget_soft_limits = Family(
            Counter(
                "ai_gateway_budget_soft_limit_reached_total",
                "Budgets whose soft threshold (BUDGET_SOFT_THRESHOLD) was crossed, once per "
                "budget and period, by the key or team holding it.",
                ["scope"],
                registry=registry,
            )
        )
        self.unpriced = Family(
            Counter(
                "ai_gateway_unpriced_requests_total",
                "Requests with token usage but no known price.",
                ["provider", "model"],
                registry=registry,
            )
        )
        self.ledger_unshipped = Gauge(
            "ai_gateway_ledger_unshipped",
            "Usage journal bytes not yet shipped to the database.",
            unit="bytes",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.ledger_lag = Gauge(
            "ai_gateway_ledger_lag",
            "Seconds since the usage shipper last caught up with the journal.",
            unit="seconds",
            multiprocess_mode="livemax",
            registry=registry,
        )

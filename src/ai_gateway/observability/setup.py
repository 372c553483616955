"""The gateway's observability, built once at start-up: the metrics (always on), the traces (only
with an OTLP endpoint: otherwise nothing of OpenTelemetry is imported, and no request pays even
a no-op call), and the /metrics endpoint."""

from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response

from ai_gateway.api.routes import Access, Call, Endpoint
from ai_gateway.config.constants import METRICS_MAX_LEARNED_NAMES
from ai_gateway.config.settings import Settings
from ai_gateway.errors import ConfigurationError, NotFound
from ai_gateway.keys.caller import Subject
from ai_gateway.observability.exposition import MetricsEndpoint, shared_directory
from ai_gateway.observability.labels import ErrorTypes, NameBound, gateway_error_codes
from ai_gateway.observability.metrics import GatewayMetrics
from ai_gateway.observability.observer import RequestObserver
from ai_gateway.observability.recorder import AttemptMetrics, LagSource, MetricsObserver
from ai_gateway.observability.shared import SharedMetrics
from ai_gateway.routing.attempts import AttemptKind, AttemptWatcher
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.routing.router import Router
from ai_gateway.schemas import ChatCompletionRequest

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, slots=True)
class Observability:
    """What the composition root wires: the request observers and the /metrics endpoint."""

    observers: tuple[RequestObserver, ...]
    metrics_endpoint: Endpoint
    count_soft_limit: Callable[[Subject], None] | None = None
    """Counts a budget's soft threshold crossed (None when metrics are off)."""
    shared: SharedMetrics | None = None
    """With several workers, this worker's side of their shared metrics (published by a
    background task the runtime runs)."""


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else
    OTEL_EXPORTER_OTLP_ENDPOINT with the traces path; None (no tracing) when neither is set, or
    when OTEL_SDK_DISABLED is true."""
    if settings.otel_sdk_disabled:
        return None
    endpoint = settings.otel_exporter_otlp_traces_endpoint
    variable = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    if not endpoint and settings.otel_exporter_otlp_endpoint:
        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + TRACES_PATH
        variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
    if not endpoint:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"{variable} must be an http:// or https:// URL (OTLP over HTTP/protobuf)."
        )
    return endpoint


def metrics_access(settings: Settings) -> Access:
    """Public (Prometheus scrapes without a key), or admin keys only."""
    if not settings.metrics_require_admin:
        return Access.PUBLIC
    if not settings.gateway_admin_keys:
        raise ConfigurationError(
            "METRICS_REQUIRE_ADMIN is on but GATEWAY_ADMIN_KEYS is empty: /metrics would "
            "refuse every scrape. Set an admin key or turn METRICS_REQUIRE_ADMIN off."
        )
    return Access.ADMIN


def known_names(router: Router) -> tuple[set[str], set[str]]:
    """The route and deployment names, and the model ids, that the config names."""
    names, models = set(router.aliases), set()
    for route in router.aliases.values():
        for deployment in route.deployments:
            names.add(deployment.key)
            models.add(deployment.model)
    return names, models


class Unwatched:
    """The attempt watcher under tracing when metrics are off: told, does nothing."""

    def started(
        self,
        route: Route,
        deployment: Deployment,
        request: ChatCompletionRequest | None,
        kind: AttemptKind,
    ) -> "Unwatched":
        """Nothing to note."""
        return self

    def succeeded(self, value: object) -> None:
        """Nothing to note."""

    def failed(self, error: BaseException) -> None:
        """Nothing to note."""


async def metrics_off(_: Call) -> Response:
    """/metrics while METRICS_ENABLED is false."""
    raise NotFound("Metrics are off: set METRICS_ENABLED=true to serve /metrics.")


def build_observability(
    settings: Settings, router: Router, *, lag: LagSource | None = None
) -> Observability:
    """Metrics on `router` (attempts, breakers) and every request; traces when an OTLP endpoint
    is set. The router is told of its watchers here."""
    endpoint = traces_endpoint(settings)
    if not settings.metrics_enabled:
        observers: tuple[RequestObserver, ...] = ()
        if endpoint is not None:
            errors = ErrorTypes(gateway_error_codes())
            observers = (with_tracing(settings, router, endpoint, Unwatched(), errors),)
        return Observability(observers, Endpoint(metrics_off, access=Access.PUBLIC))
    access = metrics_access(settings)
    metrics = GatewayMetrics(key_labels=settings.metrics_key_labels)
    route_names, model_names = known_names(router)
    names = NameBound(route_names, limit=METRICS_MAX_LEARNED_NAMES)
    models = NameBound(model_names, limit=METRICS_MAX_LEARNED_NAMES)
    errors = ErrorTypes(gateway_error_codes())
    observer = MetricsObserver(
        metrics,
        names=names,
        models=models,
        errors=errors,
        key_labels=settings.metrics_key_labels,
        lag=lag,
    )
    watcher: AttemptWatcher = AttemptMetrics(metrics, names=names, errors=errors)
    if endpoint is None:
        router.watch(watcher)
        observers = (observer,)
    else:
        observers = (with_tracing(settings, router, endpoint, watcher, errors), observer)
    router.breakers.watch(observer.breaker_changed)

    def refresh() -> None:
        for breaker in router.breakers:
            breaker.current()  # an open breaker past its cooldown shows as half-open
        observer.refresh_lag()

    def count_soft_limit(subject: Subject) -> None:
        metrics.budget_soft_limits(subject.scope.value).inc()

    directory = shared_directory()
    shared = SharedMetrics(metrics, directory) if directory is not None else None
    exposition = MetricsEndpoint(metrics, refresh=refresh, shared=shared)
    served = Endpoint(exposition.handle, access=access)
    return Observability(observers, served, count_soft_limit, shared)


def with_tracing(
    settings: Settings, router: Router, endpoint: str, inner: AttemptWatcher, errors: ErrorTypes
) -> RequestObserver:
    """The tracing observer; the router's attempts traced around `inner`."""
    from ai_gateway.observability.tracing import build_tracing  # only when tracing is on

    # the provider flushes and shuts down at exit (the SDK registers that itself)
    tracing, watcher, _ = build_tracing(settings, endpoint, inner, errors=errors)
    router.watch(watcher)
    return tracing

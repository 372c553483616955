"""GET /metrics: the Prometheus exposition, in the format the scraper asks for (text or
OpenMetrics), of this process's metrics, or with several workers of every worker's
(observability/shared.py)."""

import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response

from ai_gateway.api.routes import Call
from ai_gateway.observability.metrics import GatewayMetrics
from ai_gateway.observability.shared import SharedMetrics

SHARED_DIRECTORY_VARIABLE = "AI_GATEWAY_METRICS_DIR"
"""Where several workers' metric files go (set by `serve --workers N` for its workers)."""


def shared_directory() -> Path | None:
    """The directory the workers share, when there are several; else None."""
    value = os.environ.get(SHARED_DIRECTORY_VARIABLE)
    return Path(value) if value else None


class MetricsEndpoint:
    """Serves the metrics."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        refresh: Callable[[], None],
        shared: SharedMetrics | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(shared or metrics)
        self._refresh = refresh

    async def handle(self, call: Call) -> Response:
        """The exposition, this worker's gauges brought up to date first."""
        self._refresh()
        try:
            encode, content_type = choose_encoder(call.request.headers.get("accept", ""))
        except (TypeError, ValueError):  # an Accept it cannot read: the plain text format
            encode, content_type = choose_encoder("")
        return Response(encode(self.registry), media_type=content_type)

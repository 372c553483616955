"""create_app(): the composition root, the only place the gateway's objects are wired together."""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from ai_gateway import __version__
from ai_gateway.api import routes
from ai_gateway.api.handlers import install_error_handlers
from ai_gateway.api.hot_path import HotPath
from ai_gateway.api.middleware import RequestContext
from ai_gateway.config.file import GatewayConfig
from ai_gateway.config.loader import load_config
from ai_gateway.config.settings import Settings, process_environment
from ai_gateway.errors import ConfigurationError
from ai_gateway.keys import KeyStore
from ai_gateway.providers.registry import Registry, build_registry
from ai_gateway.routing.table import build_router

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    config: GatewayConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> ASGIApp:
    """The ASGI app; pass `registry` to serve fakes instead of the configured providers, and
    `config` instead of reading the file `AI_GATEWAY_CONFIG` names.

    Requests pass RequestContext (id, timing, log line, last-resort 500), then HotPath (the
    chat routes), then FastAPI (everything else, and the exception handlers). A bad config file
    fails here, before the server starts.
    """
    keys = KeyStore.from_secrets(settings.gateway_api_keys)
    if not keys:
        raise ConfigurationError("GATEWAY_API_KEYS is empty: set at least one gateway key.")
    config = config or load_config(settings.ai_gateway_config)
    owns_registry = registry is None
    registry = registry or build_registry(
        settings, config, process_environment() if environ is None else environ
    )
    router = build_router(config, registry, request_timeout_s=settings.request_timeout_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await registry.aclose()

    app = FastAPI(
        title="ai_gateway",
        version=__version__,
        lifespan=lifespan if owns_registry else None,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's built-in OpenTelemetry hooks read the environment on every request;
        # the gateway reports its own timings (Server-Timing, the request log line).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.router = router
    install_error_handlers(app)
    app.include_router(routes.api_router)
    return RequestContext(HotPath(app))

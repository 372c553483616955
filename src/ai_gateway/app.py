"""create_app(): the composition root, the only place the gateway's objects are wired together."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from ai_gateway import __version__
from ai_gateway.api import routes
from ai_gateway.api.handlers import install_error_handlers
from ai_gateway.api.hot_path import HotPath
from ai_gateway.api.middleware import RequestContext
from ai_gateway.config.config import Settings
from ai_gateway.keys import KeyStore
from ai_gateway.providers.registry import Registry, open_registry


class ConfigurationError(RuntimeError):
    """The settings cannot start a gateway; the message says what to change."""


def create_app(settings: Settings, *, registry: Registry | None = None) -> ASGIApp:
    """The ASGI app; pass `registry` to serve fakes instead of the configured providers.

    Requests pass RequestContext (id, timing, log line, last-resort 500), then HotPath (the
    chat routes), then FastAPI (everything else, and the exception handlers).
    """
    keys = KeyStore.from_secrets(settings.gateway_api_keys)
    if not keys:
        raise ConfigurationError("GATEWAY_API_KEYS is empty: set at least one gateway key.")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_registry(settings) as opened:
            app.state.registry = opened
            yield

    app = FastAPI(
        title="ai_gateway",
        version=__version__,
        lifespan=lifespan if registry is None else None,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's built-in OpenTelemetry hooks read the environment on every request;
        # the gateway reports its own timings (Server-Timing, the request log line).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.keys = keys
    if registry is not None:
        app.state.registry = registry
    install_error_handlers(app)
    app.include_router(routes.api_router)
    return RequestContext(HotPath(app))

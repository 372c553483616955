"""create_app(): the composition root, the only place the gateway's objects are wired together."""

from collections.abc import Mapping

from ai_gateway.api.dispatch import Gateway
from ai_gateway.api.openapi import build_document
from ai_gateway.api.routes import Endpoints, Routes
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
) -> Gateway:
    """The ASGI app; pass `registry` to serve fakes instead of the configured providers, and
    `config` instead of reading the file `AI_GATEWAY_CONFIG` names.

    Everything is built and checked here, before the server listens: a bad config file fails
    here. The app closes the registry it built when the server shuts down.
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
    endpoints = Endpoints(
        router,
        max_json_depth=settings.max_json_depth,
        send_timeout_s=settings.stream_send_timeout_s,
        openapi=build_document(),
    )
    return Gateway(
        Routes(endpoints),
        keys=keys,
        registry=registry,
        max_request_bytes=settings.max_request_bytes,
        on_shutdown=registry.aclose if owns_registry else None,
    )

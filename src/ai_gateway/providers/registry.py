"""Registry: model id -> provider; built from settings, opened and closed with the app."""

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager

import structlog

from ai_gateway.config import constants
from ai_gateway.config.config import Settings
from ai_gateway.errors import ModelNotFound, NotFound
from ai_gateway.providers.base import ChatProvider
from ai_gateway.providers.cerebras import CerebrasProvider
from ai_gateway.providers.cerebras_client import CerebrasAPI, CerebrasClient
from ai_gateway.providers.cerebras_mock import MockCerebrasClient
from ai_gateway.providers.unconfigured import UnconfiguredProvider

log = structlog.get_logger(__name__)


class Registry:
    """The providers this gateway serves, by name."""

    def __init__(self, providers: Mapping[str, ChatProvider]) -> None:
        self._providers = dict(providers)

    def __iter__(self) -> Iterator[ChatProvider]:
        return iter(self._providers.values())

    def provider(self, name: str) -> ChatProvider:
        """The provider behind a route prefix such as `/cerebras/v1/...`."""
        try:
            return self._providers[name]
        except KeyError:
            raise NotFound(f"Unknown provider '{name[:64]}'.") from None

    def resolve(self, model: str) -> tuple[ChatProvider, str]:
        """The provider and upstream model id for a unified-route model `provider/model-id`."""
        name, slash, model_id = model.partition("/")
        if slash and not model_id:
            raise ModelNotFound(
                f"Model '{model[:200]}' names no model after the provider.", param="model"
            )
        if not slash:
            raise ModelNotFound(
                f"Model '{model[:200]}' has no provider prefix: use '<provider>/<model>', "
                f"for example '{constants.CEREBRAS}/gpt-oss-120b'.",
                param="model",
            )
        provider = self._providers.get(name)
        if provider is None:
            known = ", ".join(sorted(self._providers)) or "none"
            raise ModelNotFound(
                f"Unknown provider '{name[:64]}' in model '{model[:200]}'. "
                f"Known providers: {known}.",
                param="model",
            )
        return provider, model_id

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self._providers.values():
            await provider.aclose()


def cerebras_client(settings: Settings) -> CerebrasAPI | None:
    """The Cerebras client the settings ask for; None when real mode has no key."""
    if settings.is_cerebras_mock:
        return MockCerebrasClient()
    if settings.cerebras_api_key is None:
        return None
    return CerebrasClient(
        settings.cerebras_api_key.get_secret_value(),
        base_url=settings.cerebras_sdk_base_url,
        timeout=settings.request_timeout_s,
    )


def build_cerebras(settings: Settings) -> ChatProvider:
    """Cerebras in mock mode, real mode, or not configured (503 on use, warned at start-up)."""
    client = cerebras_client(settings)
    if client is None:
        log.warning(
            "provider_not_configured", provider=constants.CEREBRAS, key_variable="CEREBRAS_API_KEY"
        )
        return UnconfiguredProvider(constants.CEREBRAS, key_variable="CEREBRAS_API_KEY")
    log.info("provider_ready", provider=constants.CEREBRAS, mock=client.is_mock)
    return CerebrasProvider(client, models_ttl_s=settings.models_cache_ttl_s)


def build_registry(settings: Settings) -> Registry:
    """Every provider the settings configure."""
    return Registry({constants.CEREBRAS: build_cerebras(settings)})


@asynccontextmanager
async def open_registry(settings: Settings) -> AsyncIterator[Registry]:
    """The registry for the app's lifetime; its clients are closed on exit."""
    registry = build_registry(settings)
    try:
        yield registry
    finally:
        await registry.aclose()

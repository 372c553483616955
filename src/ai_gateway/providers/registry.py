"""Registry: model id -> provider; built from settings, opened and closed with the app."""

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager

import structlog
from pydantic import SecretStr

from ai_gateway.config import constants
from ai_gateway.config.config import Settings
from ai_gateway.errors import ModelNotFound, NotFound
from ai_gateway.providers.base import ChatProvider
from ai_gateway.providers.cerebras import CerebrasProvider
from ai_gateway.providers.cerebras_client import CerebrasAPI, CerebrasClient
from ai_gateway.providers.cerebras_mock import MockCerebrasClient
from ai_gateway.providers.openai_compat import OpenAICompatProvider
from ai_gateway.providers.specs import SPECS, OpenAICompatSpec
from ai_gateway.providers.unconfigured import UnconfiguredProvider
from ai_gateway.providers.wire import OpenAIWire, WireClient

log = structlog.get_logger(__name__)


class Registry:
    """The providers this gateway serves, by name."""

    def __init__(
        self, providers: Mapping[str, ChatProvider], *, wire: WireClient | None = None
    ) -> None:
        self._providers = dict(providers)
        self._wire = wire

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
        """Close every provider, then the shared HTTP session."""
        for provider in self._providers.values():
            await provider.aclose()
        if self._wire is not None:
            await self._wire.aclose()


def cerebras_client(settings: Settings, wire: WireClient) -> CerebrasAPI | None:
    """The Cerebras client the settings ask for; None when real mode has no key."""
    if settings.is_cerebras_mock:
        return MockCerebrasClient()
    if settings.cerebras_api_key is None:
        return None
    key = settings.cerebras_api_key.get_secret_value()
    if settings.cerebras_client == "sdk":
        return CerebrasClient(
            key, base_url=settings.cerebras_sdk_base_url, timeout=settings.request_timeout_s
        )
    base_url = f"{settings.cerebras_sdk_base_url}/v1"
    return OpenAIWire(wire, provider=constants.CEREBRAS, base_url=base_url, api_key=key)


def build_cerebras(settings: Settings, wire: WireClient) -> ChatProvider:
    """Cerebras in mock mode, real mode, or not configured (503 on use, warned at start-up)."""
    client = cerebras_client(settings, wire)
    if client is None:
        log.warning(
            "provider_not_configured", provider=constants.CEREBRAS, key_variable="CEREBRAS_API_KEY"
        )
        return UnconfiguredProvider(constants.CEREBRAS, key_variable="CEREBRAS_API_KEY")
    log.info(
        "provider_ready",
        provider=constants.CEREBRAS,
        mock=client.is_mock,
        transport=None if client.is_mock else settings.cerebras_client,
    )
    return CerebrasProvider(client, models_ttl_s=settings.models_cache_ttl_s)


def build_vendor(
    settings: Settings, wire: WireClient, spec: OpenAICompatSpec
) -> ChatProvider | None:
    """An OpenAI-compatible vendor, if the settings turn it on (its key, or for a local server
    its base URL)."""
    key: SecretStr | None = getattr(settings, spec.key_setting)
    base_url: str | None = getattr(settings, spec.base_url_setting)
    if (key is None) if spec.requires_key else (base_url is None):
        return None
    client = OpenAIWire(
        wire,
        provider=spec.name,
        base_url=base_url or spec.base_url,
        api_key=key.get_secret_value() if key else "",
        headers=spec.headers,
    )
    log.info("provider_ready", provider=spec.name, mock=False, transport="native")
    return OpenAICompatProvider(
        spec.name,
        client,
        unsupported_params=spec.unsupported_params,
        models_ttl_s=settings.models_cache_ttl_s,
    )


def build_registry(settings: Settings) -> Registry:
    """Every provider the settings configure, sharing one HTTP session for the OpenAI wire."""
    wire = WireClient(timeout=settings.request_timeout_s)
    providers = {constants.CEREBRAS: build_cerebras(settings, wire)}
    for spec in SPECS:
        if (vendor := build_vendor(settings, wire, spec)) is not None:
            providers[spec.name] = vendor
    return Registry(providers, wire=wire)


@asynccontextmanager
async def open_registry(settings: Settings) -> AsyncIterator[Registry]:
    """The registry for the app's lifetime; its clients are closed on exit."""
    registry = build_registry(settings)
    try:
        yield registry
    finally:
        await registry.aclose()

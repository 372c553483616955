"""Registry: model id -> provider; built from settings, opened and closed with the app."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import structlog

from ai_gateway.config import constants
from ai_gateway.config.file import GatewayConfig, ProviderConfig, check_base_url
from ai_gateway.config.settings import Settings
from ai_gateway.errors import ConfigurationError, ModelNotFound, NotFound
from ai_gateway.providers.cerebras import CerebrasProvider
from ai_gateway.providers.cerebras_mock import MockCerebrasClient
from ai_gateway.providers.openai_compat import OpenAICompatProvider
from ai_gateway.providers.params import Action, ParamPolicy
from ai_gateway.providers.protocol import ChatProvider, UpstreamAPI
from ai_gateway.providers.specs import SPECS, OpenAICompatSpec
from ai_gateway.providers.unconfigured import UnconfiguredProvider
from ai_gateway.providers.upstream_limits import UpstreamLimits
from ai_gateway.providers.wire import OpenAIWire, WireClient
from ai_gateway.redaction import Redactor

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


def cerebras_client(settings: Settings, wire: WireClient) -> UpstreamAPI | None:
    """The Cerebras client the settings ask for; None when real mode has no key. The
    official SDK (about 6 MiB of modules) is imported only when CEREBRAS_CLIENT=sdk."""
    if settings.is_cerebras_mock:
        return MockCerebrasClient()
    if settings.cerebras_api_key is None:
        return None
    key = settings.cerebras_api_key.get_secret_value()
    if settings.cerebras_client == "sdk":
        from ai_gateway.providers.cerebras_client import CerebrasClient  # only for this transport

        return CerebrasClient(
            key,
            base_url=settings.cerebras_sdk_base_url,
            timeout=settings.request_timeout_s,
            limits=wire.limits,
            redactor=wire.redactor,
        )
    base_url = f"{settings.cerebras_sdk_base_url}/v1"
    return OpenAIWire(wire, provider=constants.CEREBRAS, base_url=base_url, api_key=key)


def param_policy(
    name: str, config: ProviderConfig | None, drops: frozenset[str] = frozenset()
) -> ParamPolicy:
    """A provider's parameter policy: the spec's drops, then the config file's actions."""
    default: dict[str, Action] = dict.fromkeys(sorted(drops), "drop")
    if config is None:
        return ParamPolicy(name, MappingProxyType(default))
    default.update(config.params)
    per_model = {model: MappingProxyType(dict(own.params)) for model, own in config.models.items()}
    return ParamPolicy(name, MappingProxyType(default), MappingProxyType(per_model))


def build_cerebras(
    settings: Settings, wire: WireClient, config: ProviderConfig | None = None
) -> ChatProvider:
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
    return CerebrasProvider(
        client,
        params=param_policy(constants.CEREBRAS, config),
        models_ttl_s=settings.models_cache_ttl_s,
    )


@dataclass(frozen=True, slots=True)
class VendorSource:
    """Where one OpenAI-compatible vendor's settings come from: its spec, env, config file."""

    spec: OpenAICompatSpec
    config: ProviderConfig | None = None
    is_shipped: bool = True  # a vendor in SPECS reads `<NAME>_API_KEY` and `<NAME>_BASE_URL`

    @property
    def key_env(self) -> str | None:
        """The variable the config file names for the key, if it names one."""
        return self.config.api_key_env if self.config is not None else None

    def key(self, environ: Mapping[str, str]) -> str | None:
        """The vendor's key: the config's `api_key_env` variable, else `<NAME>_API_KEY`."""
        if self.key_env:
            return environ.get(self.key_env, "").strip() or None
        if not self.is_shipped:
            return None
        return environ.get(self.spec.key_variable, "").strip() or None

    def base_url(self, environ: Mapping[str, str]) -> str | None:
        """A base URL set by the config file or `<NAME>_BASE_URL`, if any; a malformed
        `<NAME>_BASE_URL` is a ConfigurationError even when the file's URL wins."""
        from_environment = self.environment_base_url(environ) if self.is_shipped else None
        if self.config is not None and self.config.base_url:
            return self.config.base_url
        return from_environment

    def environment_base_url(self, environ: Mapping[str, str]) -> str | None:
        """`<NAME>_BASE_URL`, checked like the config file's `base_url`; blank is unset."""
        variable = self.spec.base_url_variable
        url = environ.get(variable, "").strip()
        if not url:
            return None
        try:
            return check_base_url(url, name=variable)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    @property
    def key_variable(self) -> str:
        """The environment variable the key is read from."""
        return self.key_env or self.spec.key_variable

    @property
    def requires_key(self) -> bool:
        """A declared `api_key_env` always needs its key; otherwise the spec decides."""
        return bool(self.key_env) or self.spec.requires_key


def build_vendor(
    settings: Settings,
    wire: WireClient,
    source: VendorSource,
    environ: Mapping[str, str] = MappingProxyType({}),
) -> ChatProvider | None:
    """An OpenAI-compatible vendor, if it is turned on (its key, or for a local server its base
    URL). A vendor the config file declares but whose key is missing answers 503."""
    spec, config = source.spec, source.config
    key, base_url = source.key(environ), source.base_url(environ)
    if (key is None) if source.requires_key else (base_url is None and config is None):
        if config is None:
            return None
        log.warning("provider_not_configured", provider=spec.name, key_variable=source.key_variable)
        return UnconfiguredProvider(spec.name, key_variable=source.key_variable)
    headers = {**spec.headers, **(config.headers if config else {})}
    client = OpenAIWire(
        wire,
        provider=spec.name,
        base_url=base_url or spec.base_url,
        api_key=key or "",
        headers=headers,
    )
    log.info("provider_ready", provider=spec.name, mock=False, transport="native")
    return OpenAICompatProvider(
        spec.name,
        client,
        params=param_policy(spec.name, config, spec.unsupported_params),
        models_ttl_s=settings.models_cache_ttl_s,
    )


def vendor_sources(config: GatewayConfig) -> list[VendorSource]:
    """Every shipped spec (with its config overrides), then the config file's new providers."""
    specs = {spec.name: spec for spec in SPECS}
    sources = [VendorSource(spec, config.providers.get(spec.name)) for spec in SPECS]
    for name, own in config.providers.items():
        if name in specs and own.spec is not None:
            raise ConfigurationError(
                f"providers.{name}.spec: '{name}' is a shipped vendor already; 'spec' is for "
                "new providers (give them another name)"
            )
        if name == constants.CEREBRAS or name in specs:
            continue
        if own.spec is not None and own.spec not in specs:
            known = ", ".join(sorted(specs))
            raise ConfigurationError(
                f"providers.{name}.spec: unknown spec '{own.spec}'; shipped specs: {known}"
            )
        base = specs[own.spec] if own.spec else None
        if base is None and own.base_url is None:
            raise ConfigurationError(
                f"providers.{name}: a new provider needs 'base_url' (or 'spec' to start from)"
            )
        spec = replace(base, name=name) if base else OpenAICompatSpec(name, own.base_url or "")
        sources.append(VendorSource(replace(spec, requires_key=False), own, is_shipped=False))
    return sources


def check_cerebras_config(config: ProviderConfig | None) -> None:
    """Cerebras's key, URL and transport come from its environment variables."""
    if config is None:
        return
    for field_name in ("spec", "base_url", "api_key_env", "headers"):
        if getattr(config, field_name):
            raise ConfigurationError(
                f"providers.cerebras.{field_name}: Cerebras is set up by its environment "
                "variables (CEREBRAS_API_KEY, CEREBRAS_BASE_URL, CEREBRAS_CLIENT); the file "
                "sets only its parameter policy ('params', 'models')"
            )


def upstream_limits(settings: Settings) -> UpstreamLimits:
    """The connection pool size and reply limits every upstream client gets."""
    return UpstreamLimits(
        max_connections=settings.upstream_max_connections,
        max_response_bytes=settings.max_upstream_response_bytes,
        max_event_bytes=settings.max_upstream_event_bytes,
    )


def upstream_redactor(
    settings: Settings, sources: list[VendorSource], environ: Mapping[str, str]
) -> Redactor:
    """One redactor that knows every configured upstream key, for every client: an upstream
    may echo another vendor's key (a shared proxy, a misrouted request)."""
    keys = [source.key(environ) for source in sources]
    if settings.cerebras_api_key is not None:
        keys.append(settings.cerebras_api_key.get_secret_value())
    return Redactor(key for key in keys if key)


def build_registry(
    settings: Settings,
    config: GatewayConfig | None = None,
    environ: Mapping[str, str] = MappingProxyType({}),
) -> Registry:
    """Every provider the settings and the config file configure, sharing one HTTP session."""
    config = config or GatewayConfig()
    cerebras_config = config.providers.get(constants.CEREBRAS)
    check_cerebras_config(cerebras_config)
    sources = vendor_sources(config)
    wire = WireClient(
        timeout=settings.request_timeout_s,
        limits=upstream_limits(settings),
        redactor=upstream_redactor(settings, sources, environ),
    )
    providers = {constants.CEREBRAS: build_cerebras(settings, wire, cerebras_config)}
    for source in sources:
        if (vendor := build_vendor(settings, wire, source, environ)) is not None:
            providers[source.spec.name] = vendor
    return Registry(providers, wire=wire)

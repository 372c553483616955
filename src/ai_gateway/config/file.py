"""The config file's shape (`AI_GATEWAY_CONFIG`): providers, model aliases, routing policy.

Every model forbids unknown keys, so a typo (`retires: 3`) is an error at start-up, not a setting
silently ignored. docs/routing.md is the reference; `ai-gateway check-config` prints the result.
"""

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ai_gateway.config.constants import CEREBRAS
from ai_gateway.providers.specs import SPECS
from ai_gateway.schemas import ChatCompletionRequest

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
GATEWAY_HEADERS = frozenset({"authorization", "content-type", "content-length", "host"})
ROUTE_FIELDS = ("model", "messages", "stream")
SECRET_VARIABLES = frozenset({"GATEWAY_API_KEYS"})
ParamAction = Literal["pass", "drop", "reject"]
Seconds = Annotated[float, Field(gt=0, le=3600)]


def check_base_url(value: str, *, name: str) -> str:
    """`value` if it is an http(s) URL with a host, a valid port and no query; else ValueError.

    The one check for every upstream base URL: the file's `base_url` and `<NAME>_BASE_URL`.
    """
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise ValueError(
            f"{name} must be http:// or https://, a host, and an optional path "
            "(no spaces, query or fragment)"
        )
    try:
        urlsplit(value).port  # noqa: B018  # raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{name} has an invalid port: {exc}") from None
    return value


class FileModel(BaseModel):
    """Base of the file's sections: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TimeoutsConfig(FileModel):
    """Limits of one upstream attempt; unset ones fall back to the routing defaults."""

    connect_s: Seconds | None = None
    first_byte_s: Seconds | None = None
    total_s: Seconds | None = None


class BackoffConfig(FileModel):
    """Exponential backoff between retries: initial * 2**n, at most max, with jitter."""

    initial_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    max_ms: Annotated[int, Field(ge=0, le=600_000)] = 4_000

    @model_validator(mode="after")
    def _ordered(self) -> "BackoffConfig":
        if self.initial_ms > self.max_ms:
            raise ValueError("initial_ms cannot exceed max_ms")
        return self


class BreakerConfig(FileModel):
    """When a deployment's circuit opens, and for how long."""

    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Field(ge=1)] = 20
    window: Annotated[int, Field(ge=1, le=10_000)] = 100
    cooldown_s: Seconds = 30.0

    @model_validator(mode="after")
    def _ratio_can_trigger(self) -> "BreakerConfig":
        if self.min_requests > self.window:
            raise ValueError("min_requests cannot exceed window (only window outcomes are kept)")
        return self


class RoutingConfig(FileModel):
    """Defaults for every route: aliases, `provider/model` and the per-provider routes."""

    retries: Annotated[int, Field(ge=0, le=10)] = 2
    deadline_s: Seconds | None = None  # unset: REQUEST_TIMEOUT_S bounds the whole request
    backoff: BackoffConfig = BackoffConfig()
    retry_after_max_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    breaker: BreakerConfig = BreakerConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()


def check_policy(value: dict[str, ParamAction]) -> dict[str, ParamAction]:
    """A policy names request parameters, not the route itself."""
    for name in ROUTE_FIELDS:
        if name in value:
            raise ValueError(f"'{name}' is part of every request and has no policy")
    return value


class ModelPolicyConfig(FileModel):
    """Parameter policy for one upstream model."""

    params: dict[str, ParamAction] = {}

    _policy = field_validator("params")(check_policy)


class ProviderConfig(FileModel):
    """A provider: a shipped vendor's overrides, or a new OpenAI-compatible upstream."""

    spec: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = {}
    params: dict[str, ParamAction] = {}
    models: dict[str, ModelPolicyConfig] = {}

    _policy = field_validator("params")(check_policy)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value, name="base_url")

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", value):
            raise ValueError(
                "api_key_env must be the name of an environment variable in capitals "
                "(e.g. GROQ_API_KEY); the file never holds the key itself"
            )
        if value in SECRET_VARIABLES:
            raise ValueError(f"{value} holds the gateway's own keys, not an upstream key")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"'{name}' is not a valid header name")
            if name.lower() in GATEWAY_HEADERS:
                raise ValueError(f"header '{name}' is set by the gateway and cannot be overridden")
            if any(ord(char) < 32 or ord(char) == 127 for char in text):
                raise ValueError(f"header '{name}' has a control character in its value")
        return value


class DeploymentConfig(FileModel):
    """One place an alias can be served: `provider/model`, with its own limits and parameters."""

    model: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}/.+$")]
    weight: Annotated[float, Field(gt=0)] | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    params: dict[str, object] = {}

    @field_validator("params")
    @classmethod
    def _request_parameters(cls, value: dict[str, object]) -> dict[str, object]:
        """Overrides must be parameters a request could carry: JSON, valid where known."""
        for name in ROUTE_FIELDS:
            if name in value:
                raise ValueError(f"'{name}' cannot be overridden by a deployment")
        try:
            orjson.dumps(value)
        except TypeError:
            raise ValueError("parameter values must be JSON (text, numbers, lists, maps)") from None
        sample = {"model": "m", "messages": [{"role": "user", "content": "x"}], **value}
        try:
            ChatCompletionRequest.from_body(sample)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"not a valid request parameter: {exc}") from None
        return value


class AliasConfig(FileModel):
    """A model name callers use, served by an ordered list of deployments."""

    deployments: Annotated[list[DeploymentConfig], Field(min_length=1)]
    strategy: Literal["ordered", "weighted"] = "ordered"
    hedge_after_ms: Annotated[int, Field(gt=0, le=600_000)] | None = None
    fallback_on_context_length: bool = False
    retries: Annotated[int, Field(ge=0, le=10)] | None = None
    deadline_s: Seconds | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "AliasConfig":
        weighted = [d.model for d in self.deployments if d.weight is not None]
        if weighted and self.strategy != "weighted":
            raise ValueError("'weight' is only used with 'strategy: weighted'")
        if self.hedge_after_ms is not None and len(self.deployments) < 2:
            raise ValueError("'hedge_after_ms' needs at least two deployments")
        models = [d.model for d in self.deployments]
        if len(set(models)) != len(models):
            raise ValueError("a deployment is listed twice")
        return self


MAX_PRICE_USD = 100_000.0
"""USD per 1M tokens: far above any list price (the dearest are a few hundred), so that a
misplaced digit or a unit mix-up is refused at start-up instead of billed."""
PriceValue = Annotated[float, Field(ge=0, le=MAX_PRICE_USD, allow_inf_nan=False)]


class PriceConfig(FileModel):
    """One model's price in USD per 1M tokens: prompt (`input`), completion (`output`) and, when
    the vendor discounts them, cached prompt tokens (`cached_input`)."""

    input: PriceValue
    output: PriceValue
    cached_input: PriceValue | None = None


ModelPrices = dict[Annotated[str, Field(min_length=1, max_length=256)], PriceConfig]


class GatewayConfig(FileModel):
    """The whole file. Every section is optional; an empty file changes nothing."""

    providers: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ProviderConfig] = {}
    aliases: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")], AliasConfig
    ] = {}
    routing: RoutingConfig = RoutingConfig()
    prices: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ModelPrices] = {}
    """Per provider (a shipped vendor, `cerebras` or a provider of this file), per upstream
    model id: prices that replace the shipped ones (usage/prices.py)."""

    @model_validator(mode="after")
    def _priced_providers_exist(self) -> "GatewayConfig":
        known = {CEREBRAS, *(spec.name for spec in SPECS), *self.providers}
        for name in self.prices:
            if name not in known:
                raise ValueError(
                    f"prices.{name}: no provider is named '{name}' (prices are set per "
                    "provider: cerebras, a shipped vendor, or a provider of `providers:`)"
                )
        return self

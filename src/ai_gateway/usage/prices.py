"""PriceTable: what a request costs, in USD, from the prices shipped in `prices.yaml` with the
config file's `prices:` section over them. A provider is priced by its vendor: a shipped vendor
and `cerebras` by their own name, a provider of the config file by the vendor its `spec` and
`base_url` point at (when they point at one); a model without a price costs None (unknown),
never 0."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Annotated, Final
from urllib.parse import urlsplit

import structlog
import yaml
from pydantic import Field, TypeAdapter, ValidationError

from ai_gateway.config import constants
from ai_gateway.config.file import GatewayConfig, PriceConfig, ProviderConfig
from ai_gateway.errors import ConfigurationError
from ai_gateway.providers.specs import SPECS
from ai_gateway.routing.route import Route
from ai_gateway.schemas import Usage
from ai_gateway.usage.ledger import token_details

log = structlog.get_logger(__name__)

SHIPPED_FILE: Final = "prices.yaml"
TOKENS_PER_PRICE: Final = 1_000_000
"""Prices are written per 1M tokens."""
DATE_SUFFIX: Final = re.compile(r"-\d{4}-?\d{2}-?\d{2}$")
"""A dated model id (`gpt-4.1-2025-04-14`) is priced as its undated name when it has no price
of its own."""
DIGITS: Final = 12
"""Costs are rounded to a millionth of a micro-USD."""
MAX_UNKNOWN_LOGGED: Final = 1_000
"""Unknown (provider, model) pairs logged once each, at most this many per process."""


class ShippedPrice(PriceConfig):
    """A shipped price: the figures, the vendor's pricing page and when they were listed."""

    source: Annotated[str, Field(pattern=r"^https://\S+$")]
    as_of: date


ShippedPrices = dict[str, dict[str, ShippedPrice]]


@dataclass(frozen=True, slots=True)
class Price:
    """One model's price in USD per token."""

    input: float
    output: float
    cached_input: float

    @classmethod
    def of(cls, config: PriceConfig) -> "Price":
        """From a price per 1M tokens; cached tokens cost `input` unless discounted."""
        cached = config.input if config.cached_input is None else config.cached_input
        return cls(
            input=config.input / TOKENS_PER_PRICE,
            output=config.output / TOKENS_PER_PRICE,
            cached_input=cached / TOKENS_PER_PRICE,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for these tokens (`cached_tokens` are part of `prompt_tokens`), rounded to
        DIGITS decimals so that float noise never shows."""
        cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
        usd = (
            (max(prompt_tokens, 0) - cached) * self.input
            + cached * self.cached_input
            + max(completion_tokens, 0) * self.output
        )
        return round(usd, DIGITS)


def shipped_prices() -> ShippedPrices:
    """The package's price file, validated."""
    text = resources.files("ai_gateway.usage").joinpath(SHIPPED_FILE).read_text(encoding="utf-8")
    try:
        return TypeAdapter(ShippedPrices).validate_python(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as error:
        raise ConfigurationError(f"The shipped {SHIPPED_FILE} is invalid: {error}") from None


def host_of(url: str) -> str | None:
    """A URL's host name."""
    return urlsplit(url).hostname


def vendor_of(name: str, own: ProviderConfig | None) -> str | None:
    """The vendor whose prices a provider pays: its own name for `cerebras` and a shipped
    vendor; for a provider of the config file, the vendor its `spec` names or its `base_url`'s
    host serves, when its requests do go to that vendor's host; otherwise None."""
    specs = {spec.name: spec for spec in SPECS}
    if name == constants.CEREBRAS or name in specs:
        return name
    if own is None:
        return None
    host = None if own.base_url is None else host_of(own.base_url)
    if own.spec is not None:
        spec = specs.get(own.spec)
        return own.spec if spec and (host is None or host == host_of(spec.base_url)) else None
    if host == host_of(constants.CEREBRAS_DEFAULT_BASE_URL):
        return constants.CEREBRAS
    for spec in SPECS:
        if spec.requires_key and host == host_of(spec.base_url):
            return spec.name
    return None


class PriceTable:
    """Prices per (provider, upstream model id); see the module docstring."""

    def __init__(self, prices: Mapping[tuple[str, str], Price]) -> None:
        self._prices = dict(prices)
        self._logged: set[tuple[str, str]] = set()
        self.unknown = 0
        """How many costs were asked of a model without a price."""

    def price(self, provider: str, model: str) -> Price | None:
        """The model's price on this provider, if it has one (a dated id falls back to its
        undated name)."""
        found = self._prices.get((provider, model))
        if found is None and DATE_SUFFIX.search(model):
            found = self._prices.get((provider, DATE_SUFFIX.sub("", model)))
        return found

    def cost(self, provider: str, model: str, usage: Usage) -> float | None:
        """USD for a completion's usage (cached prompt tokens at the cached price); None when
        the model's price is unknown (counted in `unknown`, logged once per model)."""
        price = self.price(provider, model)
        if price is None:
            self._note_unknown(provider, model)
            return None
        cached, _ = token_details(usage)
        return price.cost(usage.prompt_tokens, usage.completion_tokens, cached or 0)

    def max_cost(self, route: Route, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The most USD the request may cost on any of the route's deployments (no cache
        discount assumed); None when a deployment's price is unknown."""
        worst: float | None = None
        for deployment in route.deployments:
            price = self.price(deployment.provider.name, deployment.model)
            if price is None:
                return None
            cost = price.cost(prompt_tokens, completion_tokens)
            worst = cost if worst is None or cost > worst else worst
        return worst

    def _note_unknown(self, provider: str, model: str) -> None:
        """Count an unknown price; log the first time a model is seen without one."""
        self.unknown += 1
        pair = (provider, model[:256])
        if pair not in self._logged and len(self._logged) < MAX_UNKNOWN_LOGGED:
            self._logged.add(pair)
            log.warning("price_unknown", provider=provider, model=pair[1])


def provider_names(config: GatewayConfig) -> list[str]:
    """Every provider a gateway with this config can have."""
    return [constants.CEREBRAS, *(spec.name for spec in SPECS), *config.providers]


def price_table(config: GatewayConfig, shipped: ShippedPrices | None = None) -> PriceTable:
    """The shipped prices of every provider's vendor, with the config file's `prices:` over
    them (an override replaces the model's whole price)."""
    shipped = shipped_prices() if shipped is None else shipped
    prices: dict[tuple[str, str], Price] = {}
    for name in dict.fromkeys(provider_names(config)):
        vendor = vendor_of(name, config.providers.get(name))
        for model, entry in shipped.get(vendor or "", {}).items():
            prices[(name, model)] = Price.of(entry)
    for name, models in config.prices.items():
        for model, override in models.items():
            prices[(name, model)] = Price.of(override)
    return PriceTable(prices)

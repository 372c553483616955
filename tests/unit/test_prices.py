"""Prices: the shipped table, costs of usage (cached tokens included), the most a route may cost,
the config file's overrides and their validation, and providers of the file priced by vendor."""

from typing import Any

import pytest

from ai_gateway.config.file import GatewayConfig
from ai_gateway.config.loader import parse_config
from ai_gateway.errors import ConfigurationError
from ai_gateway.providers.cerebras_refusals import MOCK_MODELS
from ai_gateway.providers.specs import SPECS
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.schemas import Usage
from ai_gateway.usage.prices import (
    Price,
    PriceTable,
    ShippedPrice,
    price_table,
    shipped_prices,
    vendor_of,
)
from tests.fakes import FakeProvider

GPT_OSS = Price(input=0.35e-6, output=0.75e-6, cached_input=0.35e-6)


def usage(prompt: int, completion: int, cached: int | None = None) -> Usage:
    extra: dict[str, Any] = {}
    if cached is not None:
        extra["prompt_tokens_details"] = {"cached_tokens": cached}
    return Usage.model_validate(
        {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": 0, **extra}
    )


def route(*deployments: tuple[str, str]) -> Route:
    return Route(
        "r", tuple(Deployment(FakeProvider(name=name), model) for name, model in deployments)
    )


def shipped_entry(**figures: float) -> ShippedPrice:
    return ShippedPrice.model_validate(
        {**figures, "source": "https://example.com/pricing", "as_of": "2026-01-01"}, strict=False
    )


def test_the_shipped_file_gives_every_entry_a_source_and_a_date() -> None:
    prices = shipped_prices()

    names = {spec.name for spec in SPECS} | {"cerebras"}
    assert set(prices) <= names
    assert {"cerebras", "openai", "groq", "mistral", "deepseek"} <= set(prices)
    for models in prices.values():
        assert len(models) >= 2
        for entry in models.values():
            assert entry.source.startswith("https://")
            assert entry.as_of.year >= 2025
            assert entry.output > 0


@pytest.mark.parametrize("model", MOCK_MODELS)
def test_every_model_the_mock_serves_has_a_price(model: str) -> None:
    table = price_table(GatewayConfig())

    assert table.cost("cerebras", model, usage(10, 10)) is not None


def test_a_cost_is_prompt_and_completion_at_their_prices() -> None:
    table = price_table(GatewayConfig())

    cost = table.cost("cerebras", "gpt-oss-120b", usage(1_000_000, 2_000_000))

    assert cost == pytest.approx(0.35 + 2 * 0.75)


def test_cached_prompt_tokens_are_billed_at_the_cached_price() -> None:
    table = price_table(GatewayConfig())

    cost = table.cost("openai", "gpt-5.4", usage(1_000_000, 0, cached=400_000))

    assert cost == pytest.approx(0.6 * 2.50 + 0.4 * 0.25)


def test_without_a_cached_price_cached_tokens_cost_the_input_price() -> None:
    table = price_table(GatewayConfig())

    with_cache = table.cost("cerebras", "gpt-oss-120b", usage(1000, 10, cached=900))

    assert with_cache == table.cost("cerebras", "gpt-oss-120b", usage(1000, 10))


def test_a_cached_count_beyond_the_prompt_is_bounded_by_it() -> None:
    price = Price(input=1.0, output=0.0, cached_input=0.5)

    assert price.cost(10, 0, cached_tokens=50) == pytest.approx(5.0)
    assert price.cost(10, 0, cached_tokens=-3) == pytest.approx(10.0)


def test_an_unknown_price_is_none_and_counted_never_zero() -> None:
    table = price_table(GatewayConfig())

    assert table.cost("cerebras", "no-such-model", usage(5, 5)) is None
    assert table.cost("ollama", "llama3", usage(5, 5)) is None
    assert table.unknown == 2
    assert table.cost("cerebras", "gpt-oss-120b", usage(5, 5)) is not None
    assert table.unknown == 2


def test_a_dated_model_id_falls_back_to_its_undated_price() -> None:
    table = price_table(GatewayConfig())

    assert table.price("openai", "gpt-4.1-2025-04-14") == table.price("openai", "gpt-4.1")
    assert table.price("openai", "gpt-4.1-2025-04-14") is not None
    assert table.price("openai", "gpt-4.1-preview") is None


def test_max_cost_is_the_dearest_deployment_without_cache_discount() -> None:
    table = price_table(GatewayConfig())
    mixed = route(("cerebras", "gpt-oss-120b"), ("cerebras", "zai-glm-4.7"))

    cost = table.max_cost(mixed, 1_000_000, 1_000_000)

    assert cost == pytest.approx(2.25 + 2.75)


def test_max_cost_is_unknown_when_any_deployment_is() -> None:
    table = price_table(GatewayConfig())

    assert table.max_cost(route(("cerebras", "gpt-oss-120b"), ("x", "y")), 10, 10) is None
    assert table.max_cost(route(), 10, 10) is None


def test_the_config_file_overrides_a_shipped_price_wholly() -> None:
    config = parse_config(
        "prices:\n  cerebras:\n    gpt-oss-120b: {input: 1, output: 2}\n"
        "    my-model: {input: 0, output: 0}\n"
    )
    table = price_table(config)

    assert table.cost("cerebras", "gpt-oss-120b", usage(10**6, 10**6)) == pytest.approx(3.0)
    assert table.cost("cerebras", "my-model", usage(10**6, 10**6)) == 0.0


def test_a_provider_of_the_file_pays_the_prices_of_the_vendor_it_reaches() -> None:
    config = parse_config(
        "providers:\n"
        "  eu-openai: {spec: openai}\n"
        "  mirror: {base_url: 'https://api.groq.com/openai/v1'}\n"
        "  local: {spec: openai, base_url: 'http://127.0.0.1:9000/v1'}\n"
        "  acme: {base_url: 'https://llm.acme.example/v1'}\n"
    )
    table = price_table(config)

    assert table.price("eu-openai", "gpt-5.4") == table.price("openai", "gpt-5.4")
    assert table.price("mirror", "llama-3.3-70b-versatile") is not None
    assert table.price("local", "gpt-5.4") is None
    assert table.price("acme", "gpt-5.4") is None


def test_vendor_of_a_cerebras_url_is_cerebras() -> None:
    config = parse_config("providers:\n  cb: {base_url: 'https://api.cerebras.ai/v1'}\n")

    assert vendor_of("cb", config.providers["cb"]) == "cerebras"
    assert vendor_of("groq", None) == "groq"
    assert vendor_of("unknown", None) is None


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{input: -1, output: 1}", "prices.cerebras.gpt-oss-120b.input"),
        ("{input: 1, output: '2'}", "prices.cerebras.gpt-oss-120b.output"),
        ("{input: .inf, output: 1}", "prices.cerebras.gpt-oss-120b.input"),
        ("{input: 1, output: 1, cached: 1}", "prices.cerebras.gpt-oss-120b.cached"),
        ("{input: 1}", "prices.cerebras.gpt-oss-120b.output"),
        ("{input: 1, output: 1000000}", "prices.cerebras.gpt-oss-120b.output"),
    ],
)
def test_a_bad_price_is_a_configuration_error_naming_the_entry(entry: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(f"prices:\n  cerebras:\n    gpt-oss-120b: {entry}\n")

    assert problem in caught.value.message


def test_prices_for_a_provider_the_gateway_cannot_have_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"prices\.opnai: no provider is named 'opnai'"):
        parse_config("prices:\n  opnai:\n    gpt-5.4: {input: 1, output: 1}\n")

    assert (
        parse_config(
            "providers:\n  acme: {base_url: 'https://a.example'}\nprices:\n"
            "  acme:\n    m: {input: 1, output: 1}\n"
        )
        .prices["acme"]["m"]
        .input
        == 1
    )


def test_a_shipped_file_without_prices_leaves_every_cost_unknown() -> None:
    table = price_table(GatewayConfig(), shipped={"cerebras": {}})

    assert table.cost("cerebras", "gpt-oss-120b", usage(1, 1)) is None


def test_shipped_figures_are_per_million_tokens() -> None:
    table = price_table(
        GatewayConfig(), shipped={"groq": {"m": shipped_entry(input=2, output=4, cached_input=1)}}
    )

    assert table.price("groq", "m") == Price(input=2e-6, output=4e-6, cached_input=1e-6)
    assert isinstance(table, PriceTable)
    assert price_table(GatewayConfig()).price("cerebras", "gpt-oss-120b") == GPT_OSS

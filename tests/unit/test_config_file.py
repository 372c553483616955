"""The config file: YAML parsed into GatewayConfig, or one ConfigurationError naming each place."""

from pathlib import Path

import pytest

from ai_gateway.config.file import (
    AliasConfig,
    BackoffConfig,
    BreakerConfig,
    DeploymentConfig,
    GatewayConfig,
    ModelPolicyConfig,
    ProviderConfig,
    RoutingConfig,
    TimeoutsConfig,
)
from ai_gateway.config.loader import load_config, location, parse_config
from ai_gateway.errors import ConfigurationError

COMPLETE = """\
providers:
  acme:
    base_url: https://llm.acme.example/v1
    api_key_env: ACME_KEY
    headers:
      X-Team: search
    params:
      logprobs: drop
      seed: reject
    models:
      acme-large:
        params:
          seed: pass
  groq:
    params:
      logit_bias: pass
  proxy:
    spec: openai
    base_url: http://127.0.0.1:9000/v1
aliases:
  fast:
    strategy: weighted
    hedge_after_ms: 400
    fallback_on_context_length: true
    retries: 1
    deadline_s: 20
    deployments:
      - model: cerebras/gpt-oss-120b
        weight: 3
        timeouts:
          connect_s: 1.5
          first_byte_s: 4
          total_s: 30
        params:
          temperature: 0.2
          max_tokens: 512
      - model: acme/acme-large
        weight: 1
  careful:
    deployments:
      - model: openai/gpt-4o
routing:
  retries: 3
  deadline_s: 45
  retry_after_max_s: 10
  backoff:
    initial_ms: 100
    max_ms: 2000
  breaker:
    consecutive_failures: 3
    failure_ratio: 0.25
    min_requests: 8
    window: 40
    cooldown_s: 12.5
  timeouts:
    connect_s: 2
    total_s: 50
"""


def error_of(text: str, path: str = "gateway.yaml") -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_config(text, path)
    return str(info.value)


def alias(body: str) -> str:
    """A file with one alias `fast` whose mapping is `body` (indented by the caller)."""
    return "aliases:\n  fast:\n" + body


# --- valid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "null\n"])
def test_an_empty_file_gives_the_defaults(text: str) -> None:
    assert parse_config(text) == GatewayConfig()


def test_the_defaults_are_documented_values() -> None:
    config = GatewayConfig()

    assert config.providers == {}
    assert config.aliases == {}
    assert config.routing.retries == 2
    assert config.routing.deadline_s is None
    assert config.routing.retry_after_max_s == 30.0
    assert config.routing.backoff == BackoffConfig(initial_ms=250, max_ms=4_000)
    assert config.routing.breaker == BreakerConfig(
        consecutive_failures=5, failure_ratio=0.5, min_requests=20, window=100, cooldown_s=30.0
    )
    assert config.routing.timeouts == TimeoutsConfig()


def test_empty_sections_are_allowed() -> None:
    config = parse_config("providers: {}\naliases: {}\nrouting: {}\n")

    assert config == GatewayConfig()


def test_complete_example_providers() -> None:
    providers = parse_config(COMPLETE).providers

    assert set(providers) == {"acme", "groq", "proxy"}
    assert providers["acme"] == ProviderConfig(
        base_url="https://llm.acme.example/v1",
        api_key_env="ACME_KEY",
        headers={"X-Team": "search"},
        params={"logprobs": "drop", "seed": "reject"},
        models={"acme-large": ModelPolicyConfig(params={"seed": "pass"})},
    )
    assert providers["groq"] == ProviderConfig(params={"logit_bias": "pass"})
    assert providers["proxy"].spec == "openai"
    assert providers["proxy"].base_url == "http://127.0.0.1:9000/v1"


def test_complete_example_weighted_alias() -> None:
    fast = parse_config(COMPLETE).aliases["fast"]

    assert fast.strategy == "weighted"
    assert fast.hedge_after_ms == 400
    assert fast.fallback_on_context_length is True
    assert fast.retries == 1
    assert fast.deadline_s == 20.0
    first, second = fast.deployments
    assert first == DeploymentConfig(
        model="cerebras/gpt-oss-120b",
        weight=3.0,
        timeouts=TimeoutsConfig(connect_s=1.5, first_byte_s=4.0, total_s=30.0),
        params={"temperature": 0.2, "max_tokens": 512},
    )
    assert second.model == "acme/acme-large"
    assert second.weight == 1.0
    assert second.timeouts == TimeoutsConfig()
    assert second.params == {}


def test_complete_example_alias_defaults() -> None:
    careful = parse_config(COMPLETE).aliases["careful"]

    assert careful == AliasConfig(deployments=[DeploymentConfig(model="openai/gpt-4o")])
    assert careful.strategy == "ordered"
    assert careful.hedge_after_ms is None
    assert careful.fallback_on_context_length is False
    assert careful.retries is None
    assert careful.deadline_s is None


def test_complete_example_routing_defaults() -> None:
    routing = parse_config(COMPLETE).routing

    assert routing == RoutingConfig(
        retries=3,
        deadline_s=45.0,
        retry_after_max_s=10.0,
        backoff=BackoffConfig(initial_ms=100, max_ms=2000),
        breaker=BreakerConfig(
            consecutive_failures=3, failure_ratio=0.25, min_requests=8, window=40, cooldown_s=12.5
        ),
        timeouts=TimeoutsConfig(connect_s=2.0, total_s=50.0),
    )


def test_partial_routing_keeps_the_other_defaults() -> None:
    routing = parse_config("routing:\n  breaker:\n    cooldown_s: 5\n").routing

    assert routing.breaker.cooldown_s == 5.0
    assert routing.breaker.consecutive_failures == 5
    assert routing.retries == 2
    assert routing.backoff == BackoffConfig()


def test_alias_names_may_contain_dots_and_colons() -> None:
    config = parse_config(
        alias("    deployments:\n      - model: openai/gpt-4o\n").replace("fast", "Team.Fast:v2")
    )

    assert list(config.aliases) == ["Team.Fast:v2"]


def test_the_parsed_config_is_frozen() -> None:
    config = parse_config(COMPLETE)

    with pytest.raises(ValueError, match="frozen"):
        config.routing.retries = 9  # type: ignore[misc]


# --- YAML and shape errors --------------------------------------------------------------------


def test_invalid_yaml_names_the_file() -> None:
    message = error_of("routing: [\n", "gw.yaml")

    assert message.startswith("gw.yaml: not valid YAML:")


def test_tabs_are_invalid_yaml() -> None:
    message = error_of("routing:\n\tretries: 1\n")

    assert "not valid YAML" in message


@pytest.mark.parametrize("text", ["- providers\n- aliases\n", "just text\n", "42\n"])
def test_the_top_level_must_be_a_mapping(text: str) -> None:
    assert error_of(text, "gw.yaml") == "gw.yaml: the top level must be a mapping"


def test_the_default_path_label_is_used_when_none_is_given() -> None:
    with pytest.raises(ConfigurationError, match=r"^<config>: the top level must be a mapping"):
        parse_config("- a\n")


# --- unknown keys and types -------------------------------------------------------------------


def test_a_typo_in_routing_is_an_error_naming_its_location() -> None:
    message = error_of("routing:\n  retires: 3\n", "gw.yaml")

    assert message.startswith("gw.yaml: 1 problem(s):")
    assert "routing.retires: Extra inputs are not permitted" in message


def test_an_unknown_top_level_section_is_an_error() -> None:
    assert "alias: Extra inputs are not permitted" in error_of("alias: {}\n")


def test_a_typo_inside_a_deployment_names_its_index() -> None:
    text = alias(
        "    deployments:\n"
        "      - model: openai/gpt-4o\n"
        "      - model: groq/llama\n"
        "        wieght: 2\n"
    )

    assert "aliases.fast.deployments[1].wieght: Extra inputs are not permitted" in error_of(text)


def test_a_typo_in_the_breaker_section_is_an_error() -> None:
    message = error_of("routing:\n  breaker:\n    cooldown: 5\n")

    assert "routing.breaker.cooldown: Extra inputs are not permitted" in message


def test_values_are_not_coerced_from_strings() -> None:
    message = error_of("routing:\n  retries: '3'\n")

    assert "routing.retries: Input should be a valid integer" in message


def test_every_problem_is_listed_one_per_line() -> None:
    message = error_of("routing:\n  retries: 99\n  deadline_s: 0\nextra: 1\n", "gw.yaml")
    lines = message.splitlines()

    assert lines[0] == "gw.yaml: 3 problem(s):"
    assert len(lines) == 4
    assert any(line.startswith("  routing.retries: ") for line in lines)
    assert any(line.startswith("  routing.deadline_s: ") for line in lines)
    assert any(line.startswith("  extra: ") for line in lines)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("routing:\n  retries: 11\n", "routing.retries"),
        ("routing:\n  retries: -1\n", "routing.retries"),
        ("routing:\n  deadline_s: 0\n", "routing.deadline_s"),
        ("routing:\n  deadline_s: 3601\n", "routing.deadline_s"),
        ("routing:\n  backoff:\n    initial_ms: -1\n", "routing.backoff.initial_ms"),
        ("routing:\n  breaker:\n    failure_ratio: 1.5\n", "routing.breaker.failure_ratio"),
        (
            "routing:\n  breaker:\n    consecutive_failures: 0\n",
            "routing.breaker.consecutive_failures",
        ),
        ("routing:\n  timeouts:\n    total_s: 0\n", "routing.timeouts.total_s"),
    ],
)
def test_out_of_range_numbers_name_their_location(text: str, where: str) -> None:
    assert f"\n  {where}: " in error_of(text)


def test_a_provider_name_must_be_lowercase() -> None:
    message = error_of("providers:\n  Acme:\n    base_url: https://x.example\n")

    assert "providers.Acme" in message
    assert "String should match pattern" in message


# --- providers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://llm.example/v1", "llm.example/v1", "https://", "https:///v1", ""]
)
def test_a_bad_base_url_is_an_error(url: str) -> None:
    message = error_of(f"providers:\n  acme:\n    base_url: '{url}'\n")

    assert "providers.acme.base_url:" in message
    assert "base_url must be http:// or https://, a host, and an optional path" in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:99999/v1", "invalid port"),
        ("http://h:abc/v1", "invalid port"),
        ("http://h/v1?key=1", "no spaces, query or fragment"),
    ],
)
def test_a_base_url_with_a_bad_port_or_a_query_is_an_error(url: str, problem: str) -> None:
    message = error_of(f"providers:\n  acme:\n    base_url: '{url}'\n")

    assert problem in message


@pytest.mark.parametrize("url", ["http://localhost:8000/v1", "https://api.example.com"])
def test_http_and_https_base_urls_are_accepted(url: str) -> None:
    config = parse_config(f"providers:\n  acme:\n    base_url: {url}\n")

    assert config.providers["acme"].base_url == url


@pytest.mark.parametrize(
    "value", ["sk-proj-abc123", "csk-0123456789abcdef", "1ABC", "MY KEY", "gsk_4bT9xQ2abc"]
)
def test_an_api_key_env_that_looks_like_a_key_is_an_error(value: str) -> None:
    message = error_of(f"providers:\n  acme:\n    api_key_env: '{value}'\n")

    assert "providers.acme.api_key_env:" in message
    assert "api_key_env must be the name of an environment variable in capitals" in message
    assert value not in message


@pytest.mark.parametrize("name", ["authorization", "Authorization", "Content-Type", "HOST"])
def test_a_header_set_by_the_gateway_cannot_be_overridden(name: str) -> None:
    message = error_of(f"providers:\n  acme:\n    headers:\n      {name}: x\n")

    assert "providers.acme.headers:" in message
    assert f"header '{name}' is set by the gateway and cannot be overridden" in message


def test_an_invalid_header_name_is_an_error() -> None:
    message = error_of("providers:\n  acme:\n    headers:\n      'X Bad': x\n")

    assert "providers.acme.headers:" in message
    assert "'X Bad' is not a valid header name" in message


def test_an_invalid_provider_param_action_names_the_param() -> None:
    message = error_of("providers:\n  acme:\n    params:\n      logprobs: skip\n")

    assert "providers.acme.params.logprobs: Input should be 'pass', 'drop' or 'reject'" in message


def test_an_invalid_model_param_action_names_the_model_and_param() -> None:
    text = "providers:\n  acme:\n    models:\n      m1:\n        params:\n          seed: nope\n"

    assert "providers.acme.models.m1.params.seed: Input should be" in error_of(text)


# --- aliases ----------------------------------------------------------------------------------


def test_a_weight_without_strategy_weighted_is_an_error() -> None:
    text = alias(
        "    deployments:\n      - model: openai/gpt-4o\n        weight: 2\n      - model: groq/x\n"
    )
    message = error_of(text)

    assert "aliases.fast: " in message
    assert "'weight' is only used with 'strategy: weighted'" in message


def test_weights_with_strategy_weighted_are_accepted() -> None:
    text = alias(
        "    strategy: weighted\n"
        "    deployments:\n"
        "      - model: openai/gpt-4o\n"
        "        weight: 2\n"
        "      - model: groq/x\n"
    )
    fast = parse_config(text).aliases["fast"]

    assert [d.weight for d in fast.deployments] == [2.0, None]


@pytest.mark.parametrize("weight", ["0", "-1"])
def test_a_weight_must_be_positive(weight: str) -> None:
    text = alias(
        f"    strategy: weighted\n    deployments:\n      - model: a/b\n        weight: {weight}\n"
    )

    assert "aliases.fast.deployments[0].weight" in error_of(text)


def test_an_unknown_strategy_is_an_error() -> None:
    text = alias("    strategy: random\n    deployments:\n      - model: a/b\n")

    assert "aliases.fast.strategy: Input should be 'ordered' or 'weighted'" in error_of(text)


def test_hedging_with_one_deployment_is_an_error() -> None:
    message = error_of(alias("    hedge_after_ms: 100\n    deployments:\n      - model: a/b\n"))

    assert "aliases.fast: " in message
    assert "'hedge_after_ms' needs at least two deployments" in message


def test_a_duplicate_deployment_is_an_error() -> None:
    message = error_of(alias("    deployments:\n      - model: a/b\n      - model: a/b\n"))

    assert "aliases.fast: " in message
    assert "a deployment is listed twice" in message


def test_an_alias_needs_at_least_one_deployment() -> None:
    assert "aliases.fast.deployments: " in error_of(alias("    deployments: []\n"))


def test_an_alias_without_deployments_is_an_error() -> None:
    assert "aliases.fast.deployments: Field required" in error_of(alias("    strategy: ordered\n"))


@pytest.mark.parametrize("model", ["gpt-4o", "/gpt-4o", "openai/", "OpenAI/gpt-4o"])
def test_a_deployment_model_needs_a_provider_prefix(model: str) -> None:
    message = error_of(alias(f"    deployments:\n      - model: '{model}'\n"))

    assert "aliases.fast.deployments[0].model: String should match pattern" in message


@pytest.mark.parametrize("name", ["model", "messages", "stream"])
def test_a_deployment_cannot_override_the_route_itself(name: str) -> None:
    text = alias(f"    deployments:\n      - model: a/b\n        params:\n          {name}: x\n")
    message = error_of(text)

    assert "aliases.fast.deployments[0].params: " in message
    assert f"'{name}' cannot be overridden by a deployment" in message


def test_errors_in_different_aliases_are_all_reported() -> None:
    text = (
        "aliases:\n"
        "  one:\n    deployments:\n      - model: nope\n"
        "  two:\n    hedge_after_ms: 5\n    deployments:\n      - model: a/b\n"
    )
    message = error_of(text)

    assert "2 problem(s)" in message
    assert "aliases.one.deployments[0].model" in message
    assert "aliases.two: " in message


# --- location() -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), "(top level)"),
        (("routing",), "routing"),
        (("routing", "breaker", "window"), "routing.breaker.window"),
        (("aliases", "fast", "deployments", 0, "model"), "aliases.fast.deployments[0].model"),
        ((0,), "[0]"),
    ],
)
def test_location_joins_the_error_path(parts: tuple[int | str, ...], expected: str) -> None:
    assert location(parts) == expected


# --- load_config ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [None, ""])
def test_load_config_without_a_path_gives_the_defaults(path: str | None) -> None:
    assert load_config(path) == GatewayConfig()


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(COMPLETE, encoding="utf-8")

    assert load_config(str(path)) == parse_config(COMPLETE)


def test_load_config_of_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")

    assert load_config(str(path)) == GatewayConfig()


def test_load_config_of_a_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"

    with pytest.raises(ConfigurationError) as info:
        load_config(str(path))

    assert str(info.value) == f"{path}: cannot read the config file: No such file or directory"


def test_load_config_of_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the config file"):
        load_config(str(tmp_path))


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routing:\n  retires: 3\n", encoding="utf-8")

    with pytest.raises(ConfigurationError) as info:
        load_config(str(path))

    assert str(info.value).startswith(f"{path}: 1 problem(s):")
    assert "routing.retires" in str(info.value)


def test_load_config_of_invalid_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"routing:\n  retries: 1 # caf\xe9\n")

    with pytest.raises(ConfigurationError, match=r"latin1\.yaml: the config file is not UTF-8"):
        load_config(str(path))


def test_a_breaker_whose_ratio_could_never_trigger_is_an_error() -> None:
    message = error_of("routing:\n  breaker: {window: 10, min_requests: 20}\n")

    assert "routing.breaker: Value error, min_requests cannot exceed window" in message


@pytest.mark.parametrize("url", ["https://host name/v1", "http://h/v1 x", "http:///v1"])
def test_a_base_url_with_spaces_or_no_host_is_an_error(url: str) -> None:
    message = error_of(f"providers:\n  acme:\n    base_url: '{url}'\n")

    assert "providers.acme.base_url:" in message


def test_a_bad_provider_name_is_reported_as_the_name() -> None:
    message = error_of("providers:\n  Acme: {base_url: 'http://h/v1'}\n")

    assert "providers.Acme (the name): String should match pattern" in message


# --- values a request could never use ------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ("{stream_options: on}", "Expected `object | null`, got `bool` - at `$.stream_options`"),
        ("{temperature: hot}", "Expected `float | null`, got `str` - at `$.temperature`"),
        ("{seed: !!binary aGk=}", "parameter values must be JSON"),
    ],
)
def test_deployment_params_must_be_valid_request_parameters(params: str, problem: str) -> None:
    message = error_of(
        f"aliases:\n  a:\n    deployments:\n      - model: x/y\n        params: {params}\n"
    )

    assert "aliases.a.deployments[0].params:" in message
    assert problem in message


@pytest.mark.parametrize("where", ["params", "models: {m: {params"])
def test_a_policy_cannot_name_the_route_itself(where: str) -> None:
    closing = "}}" if "models" in where else ""
    policy = f"{where}: {{stream: reject}}{closing}"
    text = f"providers:\n  acme:\n    base_url: http://h/v1\n    {policy}\n"

    assert "'stream' is part of every request and has no policy" in error_of(text)


def test_a_header_value_with_a_line_break_is_an_error() -> None:
    text = 'providers:\n  acme:\n    base_url: http://h/v1\n    headers: {X-A: "a\\r\\nB: c"}\n'

    assert "header 'X-A' has a control character in its value" in error_of(text)


def test_the_gateways_own_key_variable_cannot_be_sent_upstream() -> None:
    text = "providers:\n  acme:\n    base_url: http://h/v1\n    api_key_env: GATEWAY_API_KEYS\n"

    assert "GATEWAY_API_KEYS holds the gateway's own keys" in error_of(text)


def test_a_backoff_that_starts_above_its_maximum_is_an_error() -> None:
    message = error_of("routing:\n  backoff: {initial_ms: 500, max_ms: 100}\n")

    assert "routing.backoff: Value error, initial_ms cannot exceed max_ms" in message


def test_a_key_written_twice_is_an_error_not_the_last_one_winning() -> None:
    text = "aliases:\n  a: {deployments: [{model: x/y}]}\n  a: {deployments: [{model: x/z}]}\n"

    assert "'a' appears twice in one mapping" in error_of(text)

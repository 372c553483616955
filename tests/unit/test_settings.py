"""Settings from keyword arguments and the environment; the registry they build."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ai_gateway.config import constants
from ai_gateway.config.file import GatewayConfig
from ai_gateway.config.settings import (
    Environment,
    InvalidSettings,
    MockMode,
    Settings,
    describe_problem,
    load_settings,
    process_environment,
    variable_name,
)
from ai_gateway.errors import ConfigurationError, ProviderNotConfigured
from ai_gateway.providers import registry as registry_module
from ai_gateway.providers.registry import Registry, build_registry
from ai_gateway.providers.specs import SPECS, OpenAICompatSpec
from tests.conftest import GATEWAY_VARIABLES
from tests.fake_upstream import FakeUpstream, json_reply
from tests.fakes import chat_request, completion_payload

DEFAULT_BASE_URL = "https://api.cerebras.ai"


def settings_from(**values: Any) -> Settings:
    """Settings from keyword arguments and the (test-controlled) environment, no `.env` file."""
    return Settings(_env_file=None, **values)


def secret_values(settings: Settings) -> tuple[str, ...]:
    return tuple(key.get_secret_value() for key in settings.gateway_api_keys)


def test_defaults_without_any_environment() -> None:
    settings = settings_from()

    assert secret_values(settings) == ()
    assert settings.cerebras_api_key is None
    assert settings.cerebras_mock is MockMode.AUTO
    assert settings.ai_gateway_env is Environment.DEVELOPMENT
    assert not settings.is_production
    assert settings.ci is False
    assert settings.log_level == "info"
    assert settings.cerebras_sdk_base_url == DEFAULT_BASE_URL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sk-a", ("sk-a",)),
        ("sk-a,sk-b", ("sk-a", "sk-b")),
        (" sk-a , ,sk-b ,, ", ("sk-a", "sk-b")),
        (",,", ()),
        ("", ()),
    ],
)
def test_gateway_api_keys_are_comma_separated_and_blanks_dropped(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", value)

    assert secret_values(settings_from()) == expected


def test_gateway_api_keys_keyword_is_split_too() -> None:
    assert secret_values(settings_from(gateway_api_keys="sk-a, ,sk-b")) == ("sk-a", "sk-b")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.cerebras.ai",
        "https://api.cerebras.ai/",
        "https://api.cerebras.ai/v1",
        "https://api.cerebras.ai/v1/",
        "  https://api.cerebras.ai/v1/  ",
    ],
)
def test_cerebras_base_url_is_normalised_to_the_host_root(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("CEREBRAS_BASE_URL", url)

    assert settings_from().cerebras_sdk_base_url == DEFAULT_BASE_URL


def test_cerebras_base_url_keeps_a_custom_path_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEREBRAS_BASE_URL", "http://127.0.0.1:9000/proxy/v1/")

    assert settings_from().cerebras_sdk_base_url == "http://127.0.0.1:9000/proxy"


@pytest.mark.parametrize("url", [None, "", "   "])
def test_unset_or_blank_cerebras_base_url_is_the_default(
    monkeypatch: pytest.MonkeyPatch, url: str | None
) -> None:
    if url is not None:
        monkeypatch.setenv("CEREBRAS_BASE_URL", url)

    assert settings_from().cerebras_sdk_base_url == DEFAULT_BASE_URL


@pytest.mark.parametrize(
    ("env", "is_mock"),
    [
        pytest.param({"CI": "true", "CEREBRAS_API_KEY": "csk-real"}, True, id="auto-ci-with-key"),
        pytest.param({}, True, id="auto-no-key-development"),
        pytest.param({"CEREBRAS_API_KEY": "   "}, True, id="auto-blank-key-development"),
        pytest.param({"CEREBRAS_API_KEY": "csk-real"}, False, id="auto-with-key"),
        pytest.param(
            {"CEREBRAS_API_KEY": "csk-real", "AI_GATEWAY_ENV": "production"},
            False,
            id="auto-with-key-production",
        ),
        pytest.param({"AI_GATEWAY_ENV": "production"}, False, id="auto-no-key-production"),
        pytest.param({"CEREBRAS_MOCK": "auto", "CEREBRAS_API_KEY": "k"}, False, id="explicit-auto"),
        pytest.param(
            {
                "CEREBRAS_MOCK": "true",
                "CEREBRAS_API_KEY": "csk-real",
                "AI_GATEWAY_ENV": "production",
            },
            True,
            id="true",
        ),
        pytest.param({"CEREBRAS_MOCK": "false"}, False, id="false-no-key"),
        pytest.param({"CEREBRAS_MOCK": "false", "CI": "true"}, False, id="false-in-ci"),
    ],
)
def test_mock_gating(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], is_mock: bool) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert settings_from().is_cerebras_mock is is_mock


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("", False),
    ],
)
def test_ci_flag_reads_what_ci_systems_set(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("CI", value)

    assert settings_from().ci is expected


@pytest.mark.parametrize(("value", "expected"), [("INFO", "info"), ("Debug", "debug")])
def test_log_level_is_case_insensitive(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)

    assert settings_from().log_level == expected


def test_unknown_log_level_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "verbose")

    with pytest.raises(ValidationError, match="log_level"):
        settings_from()


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_invalid_request_timeout_is_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("REQUEST_TIMEOUT_S", value)

    with pytest.raises(ValidationError, match="request_timeout_s"):
        settings_from()


def test_request_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "2.5")

    assert settings_from().request_timeout_s == 2.5


def test_unknown_environment_name_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_GATEWAY_ENV", "staging")

    with pytest.raises(ValidationError, match="ai_gateway_env"):
        settings_from()


@pytest.mark.anyio
async def test_production_without_a_cerebras_key_serves_503_not_configured() -> None:
    registry = build_registry(settings_from(ai_gateway_env="production"))
    provider = registry.provider("cerebras")

    with pytest.raises(ProviderNotConfigured) as caught:
        await provider.chat_completions(chat_request())

    error = caught.value
    assert error.status_code == 503
    assert error.code == "provider_not_configured"
    assert error.headers == {"x-should-retry": "false"}
    assert "CEREBRAS_API_KEY" in error.message
    assert provider.is_mock is False
    assert await provider.list_models() == []
    await registry.aclose()


@pytest.mark.anyio
async def test_production_without_a_cerebras_key_fails_a_stream_before_its_first_chunk() -> None:
    registry = build_registry(settings_from(ai_gateway_env="production"))
    chunks = registry.provider("cerebras").stream_chat_completions(chat_request(stream=True))

    with pytest.raises(ProviderNotConfigured):
        await anext(chunks)

    await chunks.aclose()
    await registry.aclose()


@pytest.mark.anyio
async def test_development_without_a_cerebras_key_serves_the_mock() -> None:
    registry = build_registry(settings_from())

    assert registry.provider("cerebras").is_mock is True
    await registry.aclose()


def test_repr_never_contains_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-very-secret-upstream")
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-gw-secret-one,sk-gw-secret-two")

    settings = settings_from()

    assert settings.cerebras_api_key is not None
    assert settings.cerebras_api_key.get_secret_value() == "csk-very-secret-upstream"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "csk-very-secret" not in text
        assert "sk-gw-secret" not in text


LIMITS = {
    "UPSTREAM_MAX_CONNECTIONS": ("upstream_max_connections", 1024),
    "STREAM_SEND_TIMEOUT_S": ("stream_send_timeout_s", 30.0),
    "MAX_UPSTREAM_RESPONSE_BYTES": ("max_upstream_response_bytes", 16 * 1024 * 1024),
    "MAX_UPSTREAM_EVENT_BYTES": ("max_upstream_event_bytes", 1024 * 1024),
    "MAX_JSON_DEPTH": ("max_json_depth", 64),
    "MAX_HEADER_BYTES": ("max_header_bytes", 64 * 1024),
    "HEADER_TIMEOUT_S": ("header_timeout_s", 5.0),
}


def test_limits_have_their_documented_defaults() -> None:
    settings = settings_from()

    assert {v: getattr(settings, field) for v, (field, _) in LIMITS.items()} == {
        v: default for v, (_, default) in LIMITS.items()
    }
    assert settings.upstream_max_connections == constants.DEFAULT_UPSTREAM_MAX_CONNECTIONS


@pytest.mark.parametrize("variable", sorted(LIMITS))
def test_limits_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "7")

    assert getattr(settings_from(), LIMITS[variable][0]) == 7


@pytest.mark.parametrize("value", ["0", "-1"])
@pytest.mark.parametrize("variable", sorted(LIMITS))
def test_limits_must_be_positive(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    assert caught.value.problems == (f"{variable} must be greater than 0",)


def test_the_json_depth_limit_stays_below_the_parsers_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_JSON_DEPTH", "257")

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    assert caught.value.problems == ("MAX_JSON_DEPTH must be less than or equal to 256",)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("api.cerebras.ai", "must be http:// or https://"),
        ("ftp://x", "must be http:// or https://"),
        ("https://api.cerebras.ai/v1?region=eu", "must be http:// or https://"),
        ("https://api cerebras.ai", "must be http:// or https://"),
        ("http://127.0.0.1:99999/v1", "has an invalid port"),
    ],
)
def test_a_malformed_cerebras_base_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("CEREBRAS_BASE_URL", url)

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    (message,) = caught.value.problems
    assert message.startswith(f"CEREBRAS_BASE_URL {problem}")


def test_settings_hold_no_per_vendor_fields() -> None:
    vendor_fields = {
        field
        for spec in SPECS
        for field in Settings.model_fields
        if field.startswith(f"{spec.name}_")
    }

    assert vendor_fields == set()


def names(registry: Registry) -> list[str]:
    return [provider.name for provider in registry]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("environ", "served"),
    [
        pytest.param({}, ["cerebras"], id="nothing-set"),
        pytest.param({"GROQ_API_KEY": "gk-123"}, ["cerebras", "groq"], id="hosted-key"),
        pytest.param({"GROQ_API_KEY": "  "}, ["cerebras"], id="blank-key-is-unset"),
        pytest.param({"GROQ_BASE_URL": "http://127.0.0.1:1/v1"}, ["cerebras"], id="hosted-url"),
        pytest.param(
            {"OLLAMA_BASE_URL": "http://127.0.0.1:1/v1"}, ["cerebras", "ollama"], id="local-url"
        ),
        pytest.param({"OLLAMA_BASE_URL": " "}, ["cerebras"], id="blank-url-is-unset"),
        pytest.param({"OLLAMA_API_KEY": "k"}, ["cerebras"], id="local-key-alone"),
    ],
)
async def test_vendor_variables_turn_vendors_on(environ: dict[str, str], served: list[str]) -> None:
    registry = build_registry(settings_from(cerebras_mock="true"), environ=environ)
    try:
        assert names(registry) == served
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_a_base_url_overrides_a_hosted_vendors_url_and_its_key_is_sent(
    fake_upstream: FakeUpstream,
) -> None:
    environ = {"MISTRAL_API_KEY": "mk-test-123", "MISTRAL_BASE_URL": f"{fake_upstream.url}/v1/"}
    fake_upstream.reply(json_reply(completion_payload(text="via override")))
    registry = build_registry(settings_from(cerebras_mock="true"), environ=environ)
    try:
        completion = await registry.provider("mistral").chat_completions(chat_request())
    finally:
        await registry.aclose()

    assert completion.data["choices"][0]["message"]["content"] == "via override"
    assert fake_upstream.requests[-1].path == "/v1/chat/completions"
    assert fake_upstream.requests[-1].headers["authorization"] == "Bearer mk-test-123"


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("OLLAMA_BASE_URL", "127.0.0.1:11434/v1"),
        ("GROQ_BASE_URL", "ftp://x"),
        ("OPENAI_BASE_URL", "https://api.openai.com/v1#frag"),
        ("VLLM_BASE_URL", "http://127.0.0.1:0x50/v1"),
    ],
)
def test_a_malformed_vendor_base_url_stops_start_up_naming_the_variable(
    variable: str, url: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_registry(settings_from(cerebras_mock="true"), environ={variable: url})

    assert str(caught.value).startswith(f"{variable} ")


def test_a_malformed_vendor_base_url_is_refused_even_when_the_file_sets_the_url() -> None:
    config = GatewayConfig.model_validate({"providers": {"groq": {"base_url": "http://h/v1"}}})

    with pytest.raises(ConfigurationError, match="GROQ_BASE_URL must be http"):
        build_registry(settings_from(), config, environ={"GROQ_BASE_URL": "groq.example"})


@pytest.mark.anyio
async def test_the_config_files_api_key_env_replaces_the_vendors_own_variable() -> None:
    config = GatewayConfig.model_validate({"providers": {"groq": {"api_key_env": "TEAM_KEY"}}})
    environ = {"GROQ_API_KEY": "gk-ignored"}

    registry = build_registry(settings_from(cerebras_mock="true"), config, environ=environ)
    try:
        assert registry.provider("groq").is_mock is False
        with pytest.raises(ProviderNotConfigured, match="TEAM_KEY"):
            await registry.provider("groq").chat_completions(chat_request())
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_a_new_provider_from_the_file_reads_no_name_derived_variables() -> None:
    config = GatewayConfig.model_validate(
        {"providers": {"lab": {"base_url": "http://127.0.0.1:1/v1"}}}
    )
    environ = {"LAB_BASE_URL": "not a url", "LAB_API_KEY": "lk-unused"}

    registry = build_registry(settings_from(cerebras_mock="true"), config, environ=environ)
    try:
        assert names(registry) == ["cerebras", "lab"]
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_a_new_spec_is_served_from_its_variables_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acme = OpenAICompatSpec("acme", "https://api.acme.example/v1")
    monkeypatch.setattr(registry_module, "SPECS", (*SPECS, acme))

    registry = build_registry(settings_from(cerebras_mock="true"), environ={"ACME_API_KEY": "a"})
    try:
        assert names(registry) == ["cerebras", "acme"]
    finally:
        await registry.aclose()


@pytest.fixture
def dot_env() -> Path:
    """A `.env` in the working directory (each test's own temporary one)."""
    path = Path(".env")
    path.write_text("CEREBRAS_MOCK=true\nDEEPSEEK_API_KEY=dk-from-file\n")
    return path


@pytest.mark.anyio
@pytest.mark.usefixtures("dot_env")
async def test_a_vendor_key_in_dot_env_turns_the_vendor_on() -> None:

    registry = build_registry(Settings(), environ=process_environment())
    try:
        assert names(registry) == ["cerebras", "deepseek"]
    finally:
        await registry.aclose()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_read_from_the_variable_the_tests_clean(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    variable = variable_name(field)
    info = Settings.model_fields[field]
    flipped = "0" if info.default is True else "1"  # a switch is set against its default
    monkeypatch.setenv(variable, flipped if info.annotation is bool else "999")

    try:
        changed = getattr(settings_from(), field) != Settings.model_fields[field].default
    except ValidationError as exc:
        changed = [error["loc"][0] for error in exc.errors()] == [field]

    assert changed, f"{variable} does not reach Settings.{field}"
    assert variable in GATEWAY_VARIABLES


def settings_problems() -> tuple[str, ...]:
    """What `load_settings` refuses, one line per problem; none when the settings load."""
    try:
        load_settings()
    except InvalidSettings as exc:
        return exc.problems
    return ()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
@pytest.mark.parametrize("value", ["-7", "sk-secret-looking-value", "1e999", "12abc"])
def test_every_settings_problem_names_its_variable_and_never_the_value(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    variable = variable_name(field)
    monkeypatch.setenv(variable, value)

    for problem in settings_problems():
        assert problem.startswith(f"{variable} ")
        assert value not in problem
        assert field not in problem


def test_every_vendor_variable_is_cleaned() -> None:
    for spec in SPECS:
        assert spec.key_variable in GATEWAY_VARIABLES
        assert spec.base_url_variable in GATEWAY_VARIABLES


def test_the_developers_own_variables_do_not_reach_the_tests(tmp_path: Path) -> None:
    leaked = {variable_name(field): "bogus" for field in Settings.model_fields}
    leaked |= {spec.key_variable: "bogus" for spec in SPECS}
    leaked |= {spec.base_url_variable: "bogus" for spec in SPECS}
    here = Path(__file__).resolve()
    result = subprocess.run(  # noqa: S603  # our own interpreter running pytest
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{here}::test_defaults_without_any_environment",
            f"{here}::test_development_without_a_cerebras_key_serves_the_mock",
        ],
        env={**os.environ, **leaked},
        cwd=here.parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-2000:]
    assert "2 passed" in result.stdout


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            {"type": "value_error", "loc": ("ci",), "msg": "Value error, odd", "input": "x"},
            "CI: Value error, odd",
        ),
        (
            {
                "type": "value_error",
                "loc": ("log_format",),
                "msg": "Value error, x",
                "input": "x",
                "ctx": {"error": ValueError("LOG_FORMAT is odd")},
            },
            "LOG_FORMAT is odd",
        ),
        (
            {
                "type": "too_short",
                "loc": ("gateway_api_keys",),
                "msg": "Tuple is short",
                "input": "",
            },
            "GATEWAY_API_KEYS: Tuple is short",
        ),
    ],
    ids=["value-error-without-its-exception", "names-its-variable", "not-a-should-be-message"],
)
def test_every_kind_of_problem_still_starts_with_its_variable(
    error: ErrorDetails, line: str
) -> None:
    assert describe_problem(error) == line

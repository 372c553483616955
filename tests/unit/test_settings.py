"""Settings from keyword arguments and the environment; the registry they build."""

from typing import Any

import pytest
from pydantic import ValidationError

from ai_gateway.config.settings import Environment, MockMode, Settings
from ai_gateway.errors import ProviderNotConfigured
from ai_gateway.providers.registry import build_registry
from tests.fakes import chat_request

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

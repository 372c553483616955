"""The `ai-gateway` command line: flags, gateway keys, configuration errors. No server starts."""

from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from ai_gateway import cli
from ai_gateway.app import create_app
from ai_gateway.cli import main, parse_args, with_gateway_keys
from ai_gateway.errors import ConfigurationError
from tests.conftest import make_settings


@pytest.fixture(autouse=True)
def _no_server_no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Starting uvicorn is a test failure; logging set-up is recorded, not applied globally."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the CLI tried to start a server")

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(uvicorn, "run", refuse)
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: calls.append((level, fmt)))
    return calls


def test_parse_args_serve_with_flags() -> None:
    args = parse_args(["serve", "--host", "0.0.0.0", "--port", "9", "--workers", "2"])  # noqa: S104

    assert args.command == "serve"
    assert args.host == "0.0.0.0"  # noqa: S104
    assert args.port == 9
    assert args.workers == 2
    assert args.log_level is None


def test_parse_args_serve_defaults() -> None:
    args = parse_args(["serve"])

    assert (args.host, args.port, args.workers, args.log_level) == ("127.0.0.1", 8000, 1, None)


def test_parse_args_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args([])

    assert caught.value.code == 2
    assert "serve" in capsys.readouterr().err


def test_development_without_keys_generates_one_and_prints_it_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(gateway_api_keys=())

    with_keys = with_gateway_keys(settings)

    keys = [key.get_secret_value() for key in with_keys.gateway_api_keys]
    assert len(keys) == 1
    assert keys[0].startswith("sk-gw-dev-")
    assert len(keys[0]) > len("sk-gw-dev-") + 16
    out = capsys.readouterr().out
    assert out.count(keys[0]) == 1
    assert out.count("sk-gw-dev-") == 1
    assert settings.gateway_api_keys == ()


def test_generated_development_keys_differ_between_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = with_gateway_keys(make_settings(gateway_api_keys=()))
    second = with_gateway_keys(make_settings(gateway_api_keys=()))

    assert first.gateway_api_keys != second.gateway_api_keys
    capsys.readouterr()


@pytest.mark.parametrize("env", ["development", "production"])
def test_given_keys_are_kept_unchanged_and_nothing_is_printed(
    capsys: pytest.CaptureFixture[str], env: str
) -> None:
    settings = make_settings(gateway_api_keys="sk-one,sk-two", ai_gateway_env=env)

    assert with_gateway_keys(settings) is settings
    assert settings.gateway_api_keys == (SecretStr("sk-one"), SecretStr("sk-two"))
    assert capsys.readouterr().out == ""


def test_production_without_keys_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(gateway_api_keys=(), ai_gateway_env="production")

    with pytest.raises(ConfigurationError, match="GATEWAY_API_KEYS"):
        with_gateway_keys(settings)

    assert "sk-gw-dev-" not in capsys.readouterr().out


def test_main_serve_in_production_without_keys_exits_2_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AI_GATEWAY_ENV", "production")

    with pytest.raises(SystemExit) as caught:
        main(["serve"])

    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("ai-gateway: configuration error: ")
    assert "GATEWAY_API_KEYS is not set" in captured.err
    assert "Traceback" not in captured.err
    assert "sk-gw-dev-" not in captured.out


def test_main_serve_with_invalid_settings_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-one")
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "0")

    with pytest.raises(SystemExit) as caught:
        main(["serve"])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ai-gateway: configuration error: ")
    assert "request_timeout_s" in err


@pytest.mark.parametrize("keys", [(), " , "], ids=["none", "blank"])
def test_create_app_without_keys_is_a_configuration_error(keys: object) -> None:
    with pytest.raises(ConfigurationError, match="GATEWAY_API_KEYS"):
        create_app(make_settings(gateway_api_keys=keys))

"""`ai-gateway check-config`: the resolved routing table, or exit 2 with every problem."""

import os
import socket
from pathlib import Path

import pytest
import uvicorn

from ai_gateway import cli
from ai_gateway.app import create_app
from ai_gateway.cli import main
from ai_gateway.config.loader import parse_config
from ai_gateway.errors import ConfigurationError
from tests.conftest import make_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"


@pytest.fixture(autouse=True)
def _no_global_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's logging set-up would point structlog at pytest's captured stream."""
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: None)


@pytest.fixture(autouse=True)
def _no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding a port or starting a server is a test failure unless a test allows it."""

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("the command bound a port or started a server")

    monkeypatch.setattr(uvicorn.Config, "bind_socket", refuse)
    monkeypatch.setattr(cli, "run_server", refuse)


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command; its exit code, stdout and stderr."""
    try:
        main(["check-config", *argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_example_resolves_on_a_fresh_machine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRAS_MOCK", "true")

    code, out, _ = check(["--config", str(EXAMPLE)], capsys)

    assert code == 0
    assert f"config: {EXAMPLE}: OK" in out
    assert "cerebras     mock" in out
    assert "groq         not configured: set GROQ_API_KEY" in out
    assert "chat: ordered, retries 2, deadline 60s, hedge after 400ms" in out
    assert "    1. cerebras/gpt-oss-120b; connect 5s, first byte 5s, total 120s" in out
    assert "cheap: weighted" in out
    assert "weight 3" in out
    assert "params temperature=0.2" in out
    assert "long: ordered, retries 1, deadline 60s, falls back on context length" in out


def test_a_vendor_key_in_the_environment_turns_its_deployments_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gk-test-0123456789")
    monkeypatch.setenv("AI_GATEWAY_CONFIG", str(EXAMPLE))

    code, out, _ = check([], capsys)

    assert code == 0
    assert "groq         ready" in out
    assert "groq/openai/gpt-oss-120b; connect 5s" in out


def test_without_a_config_file_the_defaults_are_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = check([], capsys)

    assert code == 0
    assert "no config file (AI_GATEWAY_CONFIG unset): OK" in out
    assert "aliases: none" in out


def test_every_problem_of_a_bad_file_is_reported_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "aliases:\n  a:\n    deployments: [{model: nope}]\n    retires: 2\nrouting: {retries: -1}\n"
    )

    code, out, err = check(["--config", str(bad)], capsys)

    assert code == 2
    assert out == ""
    assert "3 problem(s)" in err
    assert "aliases.a.deployments[0].model" in err
    assert "aliases.a.retires: Extra inputs are not permitted" in err
    assert "routing.retries" in err


def test_a_deployment_on_an_unknown_provider_is_refused_at_start_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "aliases:\n  a:\n    deployments:\n      - model: groq/llama\n"

    with pytest.raises(ConfigurationError, match=r"aliases\.a\.deployments\[0\]: Unknown provider"):
        create_app(make_settings(cerebras_mock="true"), config=parse_config(text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers:\n  x: {spec: nosuch}\n", "providers.x.spec: unknown spec 'nosuch'"),
        ("providers:\n  x: {headers: {X-A: b}}\n", "providers.x: a new provider needs 'base_url'"),
        (
            "providers:\n  cerebras: {base_url: 'http://h'}\n",
            "providers.cerebras.base_url: Cerebras is set up by its environment variables",
        ),
    ],
)
def test_provider_sections_that_cannot_work_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_app(make_settings(cerebras_mock="true"), config=parse_config(text))


def test_serve_refuses_a_bad_config_file_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routing: [1, 2]\n")
    monkeypatch.setenv("AI_GATEWAY_CONFIG", str(bad))
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-test")

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "1"])

    assert exited.value.code == 2
    assert "routing: Input should be a valid dictionary" in capsys.readouterr().err


def test_a_shipped_vendor_cannot_take_a_spec() -> None:
    text = "providers:\n  groq: {spec: openai}\n"

    with pytest.raises(
        ConfigurationError, match=r"providers\.groq\.spec: 'groq' is a shipped vendor"
    ):
        create_app(make_settings(cerebras_mock="true"), config=parse_config(text))


def test_a_first_byte_limit_above_the_request_timeout_is_refused() -> None:
    deployment = "{model: cerebras/m, timeouts: {first_byte_s: 90}}"
    text = f"aliases:\n  a:\n    deployments:\n      - {deployment}\n"

    with pytest.raises(ConfigurationError) as refused:
        create_app(make_settings(cerebras_mock="true"), config=parse_config(text))

    message = str(refused.value)
    assert "aliases.a.deployments[0].timeouts.first_byte_s: 90 s is more than" in message
    assert "REQUEST_TIMEOUT_S (60 s)" in message


def test_a_key_variable_named_by_the_file_is_read_from_dot_env_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text("GROQ_API_KEY=gk-from-dot-env-0123456789\n")

    code, out, _ = check(["--config", str(EXAMPLE)], capsys)

    assert code == 0
    assert "groq         ready" in out


def test_serve_takes_the_config_file_as_a_flag_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("aliases: {a: {deployments: []}}\n")
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-test")

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "1", "--config", str(bad)])

    assert exited.value.code == 2
    assert "aliases.a.deployments: List should have at least 1 item" in capsys.readouterr().err


def test_workers_check_the_file_once_and_inherit_it(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Config, "bind_socket", lambda config: socket.socket())
    monkeypatch.setattr(cli, "run_server", lambda config, sock: started.append(config))
    exported = {"GATEWAY_API_KEYS": "sk-test", "LOG_LEVEL": "info", "AI_GATEWAY_CONFIG": ""}
    for name, value in {**exported, "CEREBRAS_MOCK": "true"}.items():
        monkeypatch.setenv(name, value)  # restored after the test: serve exports these

    main(["serve", "--workers", "2", "--config", str(EXAMPLE)])

    assert started[0].workers == 2
    assert os.environ["AI_GATEWAY_CONFIG"] == str(EXAMPLE)


def test_workers_refuse_a_bad_file_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("aliases:\n  a:\n    deployments: [{model: nosuch/m}]\n")
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-test")

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", "2", "--config", str(bad)])

    assert exited.value.code == 2


def test_yaml_errors_name_the_file_not_a_unicode_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "gw.yaml"
    bad.write_text("routing:\n  retries: 1\n  retries: 2\n")

    code, _, err = check(["--config", str(bad)], capsys)

    assert code == 2
    assert f'in "{bad}", line 3, column 3' in err
    assert "<unicode string>" not in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CEREBRAS_BASE_URL", "api.cerebras.ai"),
        ("CEREBRAS_BASE_URL", "ftp://x"),
        ("GROQ_BASE_URL", "groq.example/v1"),
        ("OLLAMA_BASE_URL", "http://127.0.0.1:port/v1"),
    ],
)
def test_a_malformed_base_url_variable_stops_with_exit_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    code, out, err = check([], capsys)

    assert code == 2
    assert "OK" not in out
    assert err.startswith(f"ai-gateway: configuration error: {variable} ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("where", ["params: {seed: reject}", "models: {m: {params: {seed: drop}}}"])
def test_a_deployment_cannot_set_a_parameter_its_provider_refuses(where: str) -> None:
    text = (
        f"providers:\n  lab:\n    base_url: http://127.0.0.1:9/v1\n    {where}\n"
        "aliases:\n  a:\n    deployments:\n      - {model: lab/m, params: {seed: 7}}\n"
    )

    with pytest.raises(ConfigurationError, match=r"deployments\[0\]\.params\.seed: providers\.lab"):
        create_app(make_settings(cerebras_mock="true"), config=parse_config(text))

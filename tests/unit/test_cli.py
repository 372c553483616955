"""The `ai-gateway` command line: flags, gateway keys, configuration errors. No server starts."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import uvicorn
from pydantic import ValidationError

from ai_gateway import cli
from ai_gateway.app import create_app
from ai_gateway.cli import development_key, main, parse_args, run_server
from ai_gateway.config.settings import Settings, describe_problem
from ai_gateway.errors import ConfigurationError
from tests.conftest import make_settings

PREFIX = "ai-gateway: configuration error: "


class Started:
    """What `serve` did: the socket it bound and the server it would have run."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.config: uvicorn.Config | None = None


@pytest.fixture(autouse=True)
def _no_server_no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Starting uvicorn is a test failure; logging set-up is recorded, not applied globally."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the CLI tried to start a server")

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(uvicorn, "run", refuse)
    monkeypatch.setattr(cli, "run_server", refuse)
    monkeypatch.setattr(uvicorn.Config, "bind_socket", refuse)
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: calls.append((level, fmt)))
    return calls


@pytest.fixture(autouse=True)
def tuned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The collector is left as the test process has it; the calls are counted."""
    calls: list[str] = []
    monkeypatch.setattr(cli, "tune_collector", lambda: calls.append("tuned"))
    return calls


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Started:
    """`serve` may bind (a socket that is never listened on) and "run" (returns at once)."""
    record = Started()

    def bind(config: uvicorn.Config) -> socket.socket:
        shown = "sk-gw-dev-" in capsys.readouterr().out
        record.events.append(f"bind, key shown: {shown}")
        return socket.socket()

    def run(config: uvicorn.Config, sock: socket.socket) -> None:
        record.config = config
        record.events.append("run")
        sock.close()

    monkeypatch.setattr(uvicorn.Config, "bind_socket", bind)
    monkeypatch.setattr(cli, "run_server", run)
    return record


def serve_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command; its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


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


@pytest.mark.parametrize("port", ["1", "65535"])
def test_the_whole_port_range_is_accepted(port: str) -> None:
    assert parse_args(["serve", "--port", port]).port == int(port)


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1", "eighty", "8.5"])
def test_a_port_outside_1_to_65535_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str], port: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["serve", "--port", port])

    assert caught.value.code == 2
    assert f"argument --port: '{port}' is not a TCP port (1-65535)" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_fewer_than_one_worker_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["serve", "--workers", workers])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --workers: '{workers}' is not a number of worker processes (1 or more)" in err


def test_development_without_keys_generates_a_key_without_printing_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = development_key(make_settings(gateway_api_keys=()))

    assert key is not None
    assert key.startswith("sk-gw-dev-")
    assert len(key) > len("sk-gw-dev-") + 16
    assert capsys.readouterr().out == ""


def test_generated_development_keys_differ_between_runs() -> None:
    settings = make_settings(gateway_api_keys=())

    assert development_key(settings) != development_key(settings)


@pytest.mark.parametrize("env", ["development", "production"])
def test_given_keys_need_no_generated_key(env: str) -> None:
    assert development_key(make_settings(gateway_api_keys="sk-one", ai_gateway_env=env)) is None


def test_production_without_keys_is_a_configuration_error() -> None:
    settings = make_settings(gateway_api_keys=(), ai_gateway_env="production")

    with pytest.raises(ConfigurationError, match="GATEWAY_API_KEYS"):
        development_key(settings)


def test_serve_prints_the_generated_key_once_after_binding_and_serves_with_it(
    started: Started, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["serve", "--port", "9"])

    out = capsys.readouterr().out
    key = next(word for word in out.split() if word.startswith("sk-gw-dev-"))
    assert started.events == ["bind, key shown: False", "run"]
    assert out.count("sk-gw-dev-") == 1
    assert started.config is not None
    assert (started.config.host, started.config.port) == ("127.0.0.1", 9)
    assert not isinstance(started.config.app, str)  # built, so checked, before the bind
    assert key.startswith("sk-gw-dev-")


def test_serve_with_given_keys_prints_nothing(
    started: Started, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-one")

    main(["serve"])

    assert started.events == ["bind, key shown: False", "run"]
    assert capsys.readouterr().out == ""


def test_one_process_serve_tunes_the_collector_once_its_app_is_built(
    started: Started, monkeypatch: pytest.MonkeyPatch, tuned: list[str]
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-one")
    build = cli.create_app

    def built(settings: Any) -> Any:
        app = build(settings)
        tuned.append("built")
        return app

    monkeypatch.setattr(cli, "create_app", built)

    main(["serve"])

    assert tuned == ["built", "tuned"]
    assert started.config is not None
    assert not isinstance(started.config.app, str)


def test_a_bad_config_file_stops_serve_before_the_key_is_printed(
    started: Started, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "gw.yaml"
    bad.write_text("routing: {retires: 3}\n")

    code, out, err = serve_exit(["serve", "--config", str(bad)], capsys)

    assert code == 2
    assert started.events == []
    assert "sk-gw-dev-" not in out
    assert err.startswith(f"{PREFIX}{bad}: 1 problem(s):")


@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_port_in_use_stops_serve_before_the_key_is_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    def port_in_use(config: uvicorn.Config) -> socket.socket:
        raise SystemExit(3)  # what uvicorn's bind_socket does after logging the OSError

    monkeypatch.setattr(uvicorn.Config, "bind_socket", port_in_use)

    code, out, _ = serve_exit(["serve", "--workers", workers], capsys)

    assert code == 3
    assert "sk-gw-dev-" not in out


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """The process environment as it was: `serve --workers N` exports variables for workers."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.usefixtures("restored_environment")
def test_several_workers_get_the_generated_key_and_the_config_through_the_environment(
    started: Started, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "gw.yaml"
    empty.write_text("")

    main(["serve", "--workers", "3", "--config", str(empty), "--log-level", "error"])

    key = next(w for w in capsys.readouterr().out.split() if w.startswith("sk-gw-dev-"))
    assert started.events == ["bind, key shown: False", "run"]
    assert started.config is not None
    assert started.config.workers == 3
    assert started.config.app == "ai_gateway.cli:app_from_environment"
    assert os.environ["GATEWAY_API_KEYS"] == key
    assert os.environ["LOG_LEVEL"] == "error"
    assert os.environ["AI_GATEWAY_CONFIG"] == str(empty)


def test_main_serve_in_production_without_keys_exits_2_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AI_GATEWAY_ENV", "production")

    code, out, err = serve_exit(["serve"], capsys)

    assert code == 2
    assert err.startswith(PREFIX)
    assert "GATEWAY_API_KEYS is not set" in err
    assert "Traceback" not in err
    assert "sk-gw-dev-" not in out


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CEREBRAS_MOCK", "True", "CEREBRAS_MOCK must be 'auto', 'true' or 'false'"),
        ("CEREBRAS_CLIENT", "bogus", "CEREBRAS_CLIENT must be 'native' or 'sdk'"),
        ("AI_GATEWAY_ENV", "staging", "AI_GATEWAY_ENV must be 'development' or 'production'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be 'json' or 'console'"),
        ("REQUEST_TIMEOUT_S", "0", "REQUEST_TIMEOUT_S must be greater than 0"),
        ("MAX_JSON_DEPTH", "-3", "MAX_JSON_DEPTH must be greater than 0"),
        ("MODELS_CACHE_TTL_S", "-1", "MODELS_CACHE_TTL_S must be greater than or equal to 0"),
        ("MAX_HEADER_BYTES", "64k", "MAX_HEADER_BYTES must be a valid integer"),
        ("HEADER_TIMEOUT_S", "soon", "HEADER_TIMEOUT_S must be a valid number"),
        (
            "CEREBRAS_BASE_URL",
            "api.cerebras.ai",
            "CEREBRAS_BASE_URL must be http:// or https://, a host, and an optional path "
            "(no spaces, query or fragment)",
        ),
    ],
    ids=[
        "enum",
        "literal",
        "environment",
        "format",
        "bound",
        "int-bound",
        "ge",
        "int",
        "float",
        "url",
    ],
)
def test_an_invalid_setting_is_one_line_naming_its_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)

    code, out, err = serve_exit(["serve"], capsys)

    assert code == 2
    assert err == f"{PREFIX}{message}\n"
    assert out == ""


def test_every_invalid_setting_gets_its_own_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CEREBRAS_MOCK", "yes")
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "-5")
    monkeypatch.setenv("LOG_LEVEL", "loud")

    code, _, err = serve_exit(["check-config"], capsys)

    assert code == 2
    assert err.splitlines() == [
        f"{PREFIX}CEREBRAS_MOCK must be 'auto', 'true' or 'false'",
        f"{PREFIX}REQUEST_TIMEOUT_S must be greater than 0",
        f"{PREFIX}LOG_LEVEL must be 'debug', 'info', 'warning' or 'error'",
    ]


def test_a_settings_error_shows_no_value_field_name_or_pydantic_link(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CEREBRAS_MOCK", "csk-looks-like-a-secret")
    monkeypatch.setenv("CEREBRAS_BASE_URL", "ftp://csk-secret-in-a-url")

    _, _, err = serve_exit(["serve"], capsys)

    for text in ("csk-", "cerebras_mock", "cerebras_base_url", "pydantic", "input_value"):
        assert text not in err
    assert "CEREBRAS_MOCK" in err
    assert "CEREBRAS_BASE_URL" in err


def test_a_boolean_setting_names_its_variable_and_what_it_accepts() -> None:
    # CI reads any text (unknown words are false), so only a non-text value can fail.
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, ci=[1])  # type: ignore[call-arg, arg-type]

    assert [describe_problem(e) for e in caught.value.errors()] == ["CI must be a valid boolean"]


@pytest.mark.parametrize("keys", [(), " , "], ids=["none", "blank"])
def test_create_app_without_keys_is_a_configuration_error(keys: object) -> None:
    with pytest.raises(ConfigurationError, match="GATEWAY_API_KEYS"):
        create_app(make_settings(gateway_api_keys=keys))


class FakeServer:
    """uvicorn.Server's `run`, as scripted: started or not, or interrupted by Ctrl+C."""

    outcome = "started"
    sockets: ClassVar[list[socket.socket] | None] = None

    def __init__(self, config: uvicorn.Config) -> None:
        self.started = False

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        FakeServer.sockets = sockets
        if self.outcome == "interrupted":
            raise KeyboardInterrupt
        self.started = self.outcome == "started"


class FakeSupervisor:
    """uvicorn's Multiprocess, recording what it would run (the real one installs handlers)."""

    runs: ClassVar[list[tuple[int, list[socket.socket]]]] = []

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.config, self.sockets = config, sockets

    def run(self) -> None:
        FakeSupervisor.runs.append((self.config.workers, self.sockets))


@pytest.fixture
def scripted_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's server and supervisor replaced, for the real `run_server` (imported above)."""
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setattr(cli, "Multiprocess", FakeSupervisor)
    FakeSupervisor.runs = []
    FakeServer.sockets = None


@pytest.mark.usefixtures("scripted_uvicorn")
@pytest.mark.parametrize("outcome", ["started", "interrupted"])
def test_one_process_serves_on_the_bound_socket_then_closes_it(
    monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    monkeypatch.setattr(FakeServer, "outcome", outcome)
    sock = socket.socket()

    run_server(uvicorn.Config("app:app"), sock)

    assert FakeServer.sockets == [sock]
    assert sock.fileno() == -1


@pytest.mark.usefixtures("scripted_uvicorn")
def test_an_app_that_fails_to_start_exits_with_uvicorns_start_up_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FakeServer, "outcome", "failed")

    with pytest.raises(SystemExit) as caught:
        run_server(uvicorn.Config("app:app"), socket.socket())

    assert caught.value.code == 3


@pytest.mark.usefixtures("scripted_uvicorn")
def test_several_workers_run_under_uvicorns_supervisor_on_the_bound_socket() -> None:
    sock = socket.socket()

    run_server(uvicorn.Config("app:app", workers=3), sock)

    assert FakeSupervisor.runs == [(3, [sock])]
    assert sock.fileno() == -1


def test_each_worker_builds_its_app_from_the_exported_environment(
    monkeypatch: pytest.MonkeyPatch, tuned: list[str]
) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: calls.append((level, fmt)))
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-exported")
    monkeypatch.setenv("LOG_LEVEL", "warning")

    app = cli.app_from_environment()

    assert callable(app)
    assert calls == [("warning", "json")]
    assert tuned == ["tuned"]

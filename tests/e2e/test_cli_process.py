"""`ai-gateway serve` as a real process: start-up, dev key, logs that hold no secrets."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, json_reply
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY, completion_payload

PROMPT = "my-very-private-prompt-text"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_command(port: int, *flags: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "ai_gateway", "serve", "--host", "127.0.0.1", "--port", str(port), *flags),
    ]


def run_to_exit(
    tmp_path: Path, *flags: str, port: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`ai-gateway serve` expected to stop on its own during start-up."""
    return subprocess.run(  # noqa: S603  # our own interpreter and module
        gateway_command(port or free_port(), *flags),
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )


def wait_until_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gateway exited during start-up")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not become healthy")


def run_gateway(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    port = free_port()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            gateway_command(port), env=env, stdout=stdout, stderr=stderr, text=True, cwd=tmp_path
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, process)
            yield url, out, err
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)


def base_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    return {**env, "CI": "false", **extra}


@pytest.fixture
def real_process(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    env = base_env(
        GATEWAY_API_KEYS=GATEWAY_KEY,
        CEREBRAS_API_KEY=UPSTREAM_KEY,
        CEREBRAS_BASE_URL=fake_upstream.url,
        CEREBRAS_MOCK="false",
        LOG_FORMAT="json",
    )
    yield from run_gateway(env, tmp_path)


def test_logs_carry_one_line_per_request_and_never_a_key_or_prompt(
    real_process: tuple[str, Path, Path], fake_upstream: FakeUpstream
) -> None:
    url, out, err = real_process
    fake_upstream.reply(
        json_reply(completion_payload()),
        json_reply({"message": f"invalid key {UPSTREAM_KEY}"}, status=401),
    )
    body = {"model": f"cerebras/{MODEL}", "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": "trace-42"}

    ok = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
    rejected = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
    time.sleep(0.3)
    logs = out.read_text() + err.read_text()

    assert (ok.status_code, rejected.status_code) == (200, 502)
    for secret in (UPSTREAM_KEY, GATEWAY_KEY, PROMPT):
        assert secret not in logs
    lines = [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "request"]
    health, first, second = requests
    assert first["request_id"] == "trace-42"
    assert first["status"] == 200
    assert (first["model"], first["provider"], first["mock"]) == (MODEL, "cerebras", False)
    assert (first["prompt_tokens"], first["completion_tokens"]) == (3, 2)
    assert first["latency_ms"] >= first["upstream_ms"] > 0
    assert 0 < first["gateway_ms"] < first["latency_ms"]
    timing = f"gw;dur={first['gateway_ms']}, upstream;dur={first['upstream_ms']}, ttfb;dur="
    assert ok.headers["server-timing"].startswith(timing)
    assert health["upstream_ms"] is None
    assert second["error_code"] == "upstream_auth_error"
    assert health["path"] == "/healthz"


def test_development_start_prints_a_generated_key_that_works(tmp_path: Path) -> None:
    env = base_env(CEREBRAS_MOCK="auto")

    for url, out, _ in run_gateway(env, tmp_path):
        key = next(w for w in out.read_text().split() if w.startswith("sk-gw-dev-"))
        body = {"model": "cerebras/gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200
        assert answer.headers["x-ai-gateway-mock"] == "true"


def test_production_without_gateway_keys_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603  # our own interpreter and module
        gateway_command(free_port()),
        env=base_env(AI_GATEWAY_ENV="production"),
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == 2
    assert "GATEWAY_API_KEYS is not set" in result.stderr


def test_production_without_upstream_key_serves_503_for_cerebras(tmp_path: Path) -> None:
    env = base_env(AI_GATEWAY_ENV="production", GATEWAY_API_KEYS=GATEWAY_KEY)

    for url, _, err in run_gateway(env, tmp_path):
        body = {"model": "cerebras/gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        models = httpx.get(f"{url}/v1/models", headers=headers)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "provider_not_configured"
        assert answer.headers["x-should-retry"] == "false"
        assert models.json() == {"object": "list", "data": []}
        assert "provider_not_configured" in err.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_config_file_exits_2_without_printing_a_key(tmp_path: Path, workers: str) -> None:
    (tmp_path / "gw.yaml").write_text("routing: {retires: 3}\n")

    result = run_to_exit(tmp_path, "--workers", workers, "--config", "gw.yaml")

    assert result.returncode == 2
    assert "sk-gw-dev-" not in result.stdout
    assert "ai-gateway: configuration error: gw.yaml: 1 problem(s):" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_fails_start_up_without_printing_a_key(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_to_exit(tmp_path, "--workers", workers, port=taken.getsockname()[1])

    assert result.returncode != 0
    assert "sk-gw-dev-" not in result.stdout
    assert "Address already in use" in result.stderr


def test_an_invalid_setting_exits_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_to_exit(tmp_path, CEREBRAS_MOCK="True")

    assert result.returncode == 2
    assert result.stderr == (
        "ai-gateway: configuration error: CEREBRAS_MOCK must be 'auto', 'true' or 'false'\n"
    )
    assert "sk-gw-dev-" not in result.stdout


def test_several_workers_serve_with_the_key_printed_once(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "stdout.log"
    with out.open("w") as stdout:
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            gateway_command(port, "--workers", "2"),
            env=base_env(CEREBRAS_MOCK="true"),
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=tmp_path,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, process)
            keys = [w for w in out.read_text().split() if w.startswith("sk-gw-dev-")]
            models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {keys[0]}"})
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)

    assert len(keys) == 1
    assert models.status_code == 200

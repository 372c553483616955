"""`ai-gateway serve --workers 2` as a real process: requests spread over both workers, and
/metrics, whichever worker answers it, counts every one of them once each worker has published
its figures (files in a directory the server makes and removes)."""

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ai_gateway.observability.shared import PUBLISH_INTERVAL_S
from tests.e2e.test_cli_process import free_port, gateway_command, wait_until_healthy
from tests.e2e.test_workers_limits import (
    PER_WORKER,
    connections_to_each_worker,
    environment,
    send_all,
)
from tests.fakes import GATEWAY_KEY, MODEL
from tests.observability.scrape import Scrape

ROUTE = f"cerebras/{MODEL}"
SCRAPES = 6


def metrics_directories(temporary: Path) -> set[str]:
    """The shared metrics directories in the gateway's temporary directory."""
    return {p.name for p in temporary.glob("ai-gateway-metrics-*")}


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="finds workers through /proc")
def test_metrics_of_two_workers_add_up_to_every_request(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"  # its own (TMPDIR): no other gateway's directories in it
    temporary.mkdir()
    env = environment(tmp_path, HEADER_TIMEOUT_S="60", TMPDIR=str(temporary))
    port = free_port()
    with (tmp_path / "stderr.log").open("w") as err:
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            gateway_command(port, "--workers", "2"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            cwd=tmp_path,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, process)
            during = metrics_directories(temporary)
            connections = connections_to_each_worker(process.pid, port)
            answers = asyncio.run(send_all(connections, GATEWAY_KEY))
            time.sleep(PUBLISH_INTERVAL_S * 1.5)  # each worker has published its figures
            scrapes = [
                Scrape.parse(httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text)
                for _ in range(SCRAPES)
            ]
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)

    assert [status for worker in answers for status, _, _ in worker] == [200] * 2 * PER_WORKER
    assert len(during) == 1
    for scrape in scrapes:
        assert scrape.value("ai_gateway_requests_total", route=ROUTE, status_code="200") == (
            2 * PER_WORKER
        )
        tokens = scrape.total(
            "gen_ai_client_token_usage_count", gen_ai_request_model=ROUTE, gen_ai_token_type="input"
        )
        assert tokens == 2 * PER_WORKER
        attempts = {"deployment": ROUTE, "outcome": "success", "error_type": ""}
        assert scrape.value("ai_gateway_upstream_attempts_total", **attempts) == 2 * PER_WORKER
    assert metrics_directories(temporary) == set()

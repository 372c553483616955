"""Several workers' metrics added up: each worker's cells published to its own file, the
scraping worker's own cells live; counters and histograms of an exited worker still count,
its gauges do not."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from ai_gateway.observability.metrics import GatewayMetrics
from ai_gateway.observability.shared import SharedMetrics
from tests.observability.scrape import Scrape


def exited_pid() -> int:
    script = "import os; print(os.getpid())"
    exited = subprocess.run(  # noqa: S603  # our own interpreter
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return int(exited.stdout)


def worker(directory: Path, pid: int, requests: int, breaker: int) -> SharedMetrics:
    metrics = GatewayMetrics(key_labels=False)
    for _ in range(requests):
        metrics.requests("fast", "200").inc()
        metrics.added_latency("fast").observe(0.002)
    metrics.breaker_state("fast").set(breaker)
    shared = SharedMetrics(metrics, directory)
    shared.pid = pid
    return shared


def scrape(shared: SharedMetrics) -> Scrape:
    registry = CollectorRegistry()
    registry.register(shared)
    return Scrape.parse(generate_latest(registry).decode())


def test_every_worker_s_counts_add_up_and_only_live_workers_gauges_count(tmp_path: Path) -> None:
    worker(tmp_path, exited_pid(), requests=3, breaker=2).publish()  # ran, then exited
    worker(tmp_path, os.getppid(), requests=4, breaker=1).publish()  # alive
    scraping = worker(tmp_path, os.getpid(), requests=5, breaker=0)  # not published: live cells

    seen = scrape(scraping)

    assert seen.value("ai_gateway_requests_total", route="fast", status_code="200") == 12
    assert seen.value("ai_gateway_added_latency_seconds_count", route="fast") == 12
    assert seen.value("ai_gateway_added_latency_seconds_bucket", route="fast", le="0.0025") == 12
    assert seen.value("ai_gateway_added_latency_seconds_bucket", route="fast", le="0.001") == 0
    assert (
        seen.value("ai_gateway_breaker_state", deployment="fast") == 1
    )  # the exited one's 2 left out


def test_a_scrape_changes_no_worker_s_cells(tmp_path: Path) -> None:
    worker(tmp_path, os.getppid(), requests=2, breaker=0).publish()
    scraping = worker(tmp_path, os.getpid(), requests=1, breaker=0)

    assert scrape(scraping).value("ai_gateway_added_latency_seconds_count", route="fast") == 3
    assert scrape(scraping).value("ai_gateway_added_latency_seconds_count", route="fast") == 3
    assert scraping.metrics.added_latency("fast").counts == [0, 0, 1] + [0] * 9


def test_a_damaged_or_foreign_file_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / f"metrics-{os.getppid()}-0a.json").write_bytes(b"{not json")
    (tmp_path / "metrics-x-0a.json").write_bytes(b"{}")
    odd = {
        "ai_gateway_requests_total": [
            [["fast"], 5],
            [["fast", "200"], "5"],
            "x",
            [["fast", "200"], 2],
        ],
        "ai_gateway_added_latency_seconds": [[["fast"], [[1, 2], 0.5]]],  # other buckets
        "ai_gateway_added_latency": [[["fast"], [[0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.002]]],
    }
    (tmp_path / f"metrics-{os.getpid() + 1}-0b.json").write_bytes(orjson.dumps(odd))
    scraping = worker(tmp_path, os.getpid(), requests=1, breaker=0)

    seen = scrape(scraping)

    assert seen.value("ai_gateway_requests_total", route="fast", status_code="200") == 3
    assert seen.value("ai_gateway_added_latency_seconds_count", route="fast") == 2


def test_a_later_worker_with_an_exited_one_s_pid_adds_to_its_counts(tmp_path: Path) -> None:
    pid = exited_pid()
    worker(tmp_path, pid, requests=100, breaker=0).publish()
    worker(tmp_path, pid, requests=5, breaker=0).publish()  # the same pid, given again
    scraping = worker(tmp_path, os.getpid(), requests=1, breaker=0)

    assert (
        scrape(scraping).value("ai_gateway_requests_total", route="fast", status_code="200") == 106
    )


def test_a_directory_gone_leaves_this_worker_s_own_figures(tmp_path: Path) -> None:
    scraping = worker(tmp_path / "removed", os.getpid(), requests=2, breaker=0)
    scraping.publish()  # nowhere to write: passed over

    assert scrape(scraping).value("ai_gateway_requests_total", route="fast", status_code="200") == 2
    assert scrape(scraping).value("ai_gateway_ledger_lag_seconds") == 0  # exported from the start

"""Nothing lost on a crash: a real `ai-gateway serve` process under load against a fake
upstream that records what it served is killed with SIGKILL several times, mid-stream and
mid-answer, and restarted on the same journal and database. Once the shipper has caught up,
every request the upstream saw has exactly one ledger entry (none missing, none doubled);
every request the caller saw completed is entered with the upstream's own token counts; the
requests cut short are `interrupted`, carrying their reserved estimate.

Runs on the default SQLite file and on PostgreSQL. Bounded: KILLS rounds of at most
ROUND_S seconds of load at CONCURRENCY requests in flight, then at most CATCH_UP_S to ship.
"""

import asyncio
import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_cli_process import base_env, free_port, gateway_command
from tests.e2e.test_replicas import fresh_postgres, migrate
from tests.fake_upstream import FakeUpstream, RecordedRequest, Reply, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY, completion_payload
from tests.usage.ledger_rows import ledger_rows

KILLS = 4
ROUND_S = (0.6, 1.6)
CONCURRENCY = 12
STREAM_EVENTS = 12
EVENT_DELAY_S = 0.03
CATCH_UP_S = 20.0
START_TIMEOUT_S = 30.0


def tokens_of(tag: str) -> tuple[int, int]:
    """The upstream's own (prompt, completion) token counts for a request: varied per tag."""
    number = int(tag.rsplit("-", 1)[1])
    return 11 + number % 17, 3 + number % 29


def tag_of(request: RecordedRequest) -> str:
    """The tag the client put in the request's message."""
    content: str = request.json["messages"][0]["content"]
    return content


def serve(request: RecordedRequest) -> Reply:
    """A stream of STREAM_EVENTS slow events or an answer after a short wait, each reporting
    the tag's token counts."""
    prompt, completion = tokens_of(tag_of(request))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    if not request.json.get("stream"):
        return json_reply(completion_payload(usage=usage), delay=random.uniform(0.05, 0.4))
    head = {"id": "chatcmpl-crash", "created": 1, "model": MODEL, "object": "chat.completion.chunk"}
    events: list[Any] = [
        {**head, "choices": [{"index": 0, "delta": {"content": "x"}}]} for _ in range(STREAM_EVENTS)
    ]
    events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**head, "choices": [], "usage": usage})
    return sse_reply(events, chunk_delay=EVENT_DELAY_S)


@dataclass
class Outcomes:
    """What the callers saw: tags whose whole response arrived."""

    completed: set[str] = field(default_factory=set)
    sent: int = 0


@dataclass
class Gateway:
    """One `ai-gateway serve` process."""

    url: str
    process: "subprocess.Popen[bytes]"
    log: Path


def start(env: dict[str, str], directory: Path, run: int) -> Gateway:
    port = free_port()
    log = directory / f"run-{run}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            gateway_command(port), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited during start-up:\n{log.read_text()}")
        try:
            if httpx.get(f"{gateway.url}/healthz", timeout=1).status_code == 200:
                return gateway
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"gateway did not become healthy:\n{log.read_text()}")


async def one(http: httpx.AsyncClient, tag: str, outcomes: Outcomes) -> None:
    """One request, JSON or stream; noted as completed only if its whole response arrived."""
    is_stream = int(tag.rsplit("-", 1)[1]) % 2 == 0
    body = {
        "model": f"cerebras/{MODEL}",
        "messages": [{"role": "user", "content": tag}],
        "stream": is_stream,
    }
    headers = {"x-request-id": tag}
    try:
        if not is_stream:
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
            if response.status_code == 200 and response.json()["usage"]:
                outcomes.completed.add(tag)
            return
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            text = b"".join([piece async for piece in response.aiter_bytes()])
        if response.status_code == 200 and text.endswith(b"data: [DONE]\n\n"):
            outcomes.completed.add(tag)
    except httpx.TransportError:
        pass  # the gateway was killed under this request


async def load(url: str, run: int, seconds: float, outcomes: Outcomes, kill: Any) -> None:
    """CONCURRENCY callers sending requests until the gateway is killed after `seconds`."""
    stop = asyncio.Event()
    counter = iter(range(run * 100_000, (run + 1) * 100_000))

    async def caller(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            outcomes.sent += 1
            await one(http, f"tag-{next(counter)}", outcomes)

    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10, limits=limits) as http:
        callers = [asyncio.ensure_future(caller(http)) for _ in range(CONCURRENCY)]
        await asyncio.sleep(seconds)
        kill()  # SIGKILL with requests in flight: streams mid-event, answers mid-wait
        stop.set()
        await asyncio.wait_for(asyncio.gather(*callers), timeout=15)


async def caught_up(url: str, seen: set[str]) -> list[dict[str, Any]]:
    """The ledger once it holds an entry for every tag the upstream saw (or CATCH_UP_S)."""
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        rows = await ledger_rows(url)
        if seen <= {row["request_id"] for row in rows} or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ai-gateway.db'}"
        return
    with fresh_postgres() as url:
        yield url


def children_of(pid: int) -> list[int]:
    """A process's children, whichever of its threads started them."""
    return [
        int(child)
        for path in Path(f"/proc/{pid}/task").glob("*/children")
        for child in path.read_text().split()
    ]


def kill_noting_children(process: subprocess.Popen[bytes], children: list[int]) -> None:
    """SIGKILL the gateway, noting its child processes (its ledger writer) first."""
    children.extend(children_of(process.pid))
    process.kill()


def ends(pid: int, timeout_s: float = 5.0) -> bool:
    """Whether the process `pid` ends within `timeout_s` (gone, or a zombie its new parent
    has not reaped yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_every_request_the_upstream_saw_has_exactly_one_ledger_entry_across_crashes(
    tmp_path: Path, database: str
) -> None:
    upstream = FakeUpstream()
    upstream.start()
    upstream.reply_with(serve)
    env = base_env(
        GATEWAY_API_KEYS=GATEWAY_KEY,
        CEREBRAS_API_KEY=UPSTREAM_KEY,
        CEREBRAS_BASE_URL=upstream.url,
        CEREBRAS_MOCK="false",
        DATABASE_URL=database,
        USAGE_JOURNAL_DIR=str(tmp_path / "journal"),
        LOG_FORMAT="json",
    )
    migrate(env, tmp_path)
    outcomes = Outcomes()
    writers: list[int] = []
    try:
        for run in range(KILLS):
            gateway = start(env, tmp_path, run)
            seconds = random.uniform(*ROUND_S)
            children: list[int] = []
            kill = partial(kill_noting_children, gateway.process, children)
            asyncio.run(load(gateway.url, run, seconds, outcomes, kill))
            gateway.process.wait(timeout=10)
            assert gateway.process.returncode == -signal.SIGKILL
            assert all(map(ends, children)), "the ledger writer outlived its gateway"
            writers += children
        # (a round killed before the shipper's first turn had no writer yet: not all have one)
        assert writers, "no ledger writer ran in any round"
        final = start(env, tmp_path, KILLS)  # the restart that recovers the last crash
        seen = {tag_of(request) for request in upstream.requests}
        rows = asyncio.run(caught_up(database, seen))
        final.process.send_signal(signal.SIGINT)
        final.process.wait(timeout=15)
    finally:
        upstream.stop()

    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(row)
    doubled = {tag: len(entries) for tag, entries in by_request.items() if len(entries) > 1}
    assert doubled == {}
    assert sorted(seen - set(by_request)) == []  # none missing
    # Entries the upstream never saw: reserved just before a kill, before the upstream call.
    assert {row["status"] for tag, (row,) in by_request.items() if tag not in seen} <= {
        "interrupted"
    }
    for tag in outcomes.completed:
        (row,) = by_request[tag]
        assert row["status"] == "200", row
        assert (row["prompt_tokens"], row["completion_tokens"]) == tokens_of(tag)
    completed_rows = [by_request[tag][0] for tag in outcomes.completed]
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in completed_rows) == sum(
        sum(tokens_of(tag)) for tag in outcomes.completed
    )
    interrupted = [row for row in rows if row["status"] == "interrupted"]
    assert interrupted, "no request was cut short: the kills hit nothing in flight"
    assert any(row["is_stream"] for row in interrupted)
    assert all(row["reserved_tokens"] > 0 for row in interrupted)
    assert {row["status"] for row in rows} <= {"200", "interrupted"}
    assert list((tmp_path / "journal").iterdir()) == []
    assert len(outcomes.completed) > KILLS * CONCURRENCY
    print(  # the figures, for the log of a run  # noqa: T201
        json.dumps(
            {
                "sent": outcomes.sent,
                "upstream_saw": len(seen),
                "entries": len(rows),
                "completed": len(outcomes.completed),
                "interrupted": len(interrupted),
            }
        )
    )

"""`ai-gateway serve --workers N` and rate limits: without REDIS_URL each worker would count a
key's limits on its own (multiplying them by N), so the server refuses to start when the
database holds a limited key; with REDIS_URL the workers share exact counts."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.test_cli_process import base_env, free_port, gateway_command, wait_until_healthy
from tests.fakes import GATEWAY_KEY, MODEL
from tests.services import REDIS_URL, redis_prefix

REFUSAL = (
    "ai-gateway: configuration error: --workers N with rate limits needs REDIS_URL: each worker "
    "would count limits on its own, multiplying them by N. Set REDIS_URL or run one worker.\n"
)


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A gateway on a SQLite file in `tmp_path`, Cerebras mocked, JSON logs."""
    return base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.db'}",
        GATEWAY_API_KEYS=GATEWAY_KEY,
        CEREBRAS_MOCK="true",
        LOG_FORMAT="json",
        **extra,
    )


def create_key(env: dict[str, str], tmp_path: Path, *options: str) -> Any:
    """`ai-gateway keys create ... --json`: the key's view, with its secret."""
    result = subprocess.run(  # noqa: S603  # our own interpreter and module
        [sys.executable, "-m", "ai_gateway", "keys", "create", "workers", *options, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def test_several_workers_without_redis_refuse_to_start_when_a_key_has_limits(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path)
    create_key(env, tmp_path, "--rpm", "5")

    result = subprocess.run(  # noqa: S603  # our own interpreter and module
        gateway_command(free_port(), "--workers", "2"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.endswith(REFUSAL)  # after the log line of the providers checked
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


PER_WORKER = 20
"""Requests sent to each worker: if each counted alone, each would admit the whole limit."""


def worker_pids(parent: int) -> list[int]:
    """The processes `parent` started (its workers, and any helper process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def accepted_by(parent: int, port: int) -> dict[int, int]:
    """Client port -> the worker process that accepted the connection to `port`."""
    client_port_of = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            client_port_of[fields[9]] = int(fields[2].rpartition(":")[2], 16)
    owners = {}
    for pid in worker_pids(parent):
        for inode in socket_inodes(pid) & client_port_of.keys():
            owners[client_port_of[inode]] = pid
    return owners


def connections_to_each_worker(parent: int, port: int) -> list[list[socket.socket]]:
    """PER_WORKER open connections accepted by each of two workers (the kernel picks the
    worker that accepts a connection: connections are opened one by one until both have
    enough; a burst of new connections can all land on one, and a worker still starting, under
    a busy machine, takes none for a while). Connections beyond PER_WORKER on a worker are
    closed as they come, so the wait holds a few dozen at most."""
    kept: list[socket.socket] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for _ in range(10):
            kept.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.01)
        time.sleep(0.1)
        owners = accepted_by(parent, port)
        by_worker: dict[int, list[socket.socket]] = {}
        unknown: list[socket.socket] = []
        for sock in kept:
            pid = owners.get(sock.getsockname()[1])
            if pid is None:
                unknown.append(sock)
            elif len(by_worker.setdefault(pid, [])) < PER_WORKER:
                by_worker[pid].append(sock)
            else:
                sock.close()  # that worker has enough
        enough = [socks for socks in by_worker.values() if len(socks) >= PER_WORKER]
        if len(enough) == 2:
            for sock in unknown + [s for socks in by_worker.values() for s in socks]:
                if not any(sock in socks for socks in enough):
                    sock.close()
            return enough
        kept = unknown + [sock for socks in by_worker.values() for sock in socks]
    for sock in kept:
        sock.close()
    raise AssertionError("the connections did not reach two workers")


Answer = tuple[int, dict[str, str], Any]
"""Status, headers, JSON body."""


async def chat_on(sock: socket.socket, secret: str) -> Answer:
    """One chat request over an open connection."""
    reader, writer = await asyncio.open_connection(sock=sock)
    body = orjson.dumps(
        {"model": f"cerebras/{MODEL}", "messages": [{"role": "user", "content": "hi"}]}
    )
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        + f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    payload = orjson.loads(await reader.readexactly(int(headers["content-length"])))
    writer.close()
    await writer.wait_closed()
    return int(head[0].split()[1]), headers, payload


async def send_all(connections: list[list[socket.socket]], secret: str) -> list[list[Answer]]:
    """One request on every connection, all at once: the answers, per worker."""
    return list(
        await asyncio.gather(
            *(asyncio.gather(*(chat_on(sock, secret) for sock in socks)) for socks in connections)
        )
    )


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="finds workers through /proc")
def test_several_workers_with_redis_share_an_exact_limit(tmp_path: Path) -> None:
    with redis_prefix() as prefix:
        # Connections wait open while they are sorted by worker: no header timeout meanwhile.
        env = environment(tmp_path, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix, HEADER_TIMEOUT_S="60")
        create_key(env, tmp_path, "--rpm", "5")
        key = create_key(env, tmp_path, "--rpm", "10")
        port = free_port()
        stderr = tmp_path / "stderr.log"
        with stderr.open("w") as err:
            process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
                gateway_command(port, "--workers", "2"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
                cwd=tmp_path,
            )
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", process)
            connections = connections_to_each_worker(process.pid, port)
            answers = asyncio.run(send_all(connections, key["key"]))
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    # Each worker got 20 requests; together they admitted the key's 10, not 10 each.
    assert [len(worker) for worker in answers] == [PER_WORKER, PER_WORKER]
    every = [answer for worker in answers for answer in worker]
    assert sorted(status for status, _, _ in every) == [200] * 10 + [429] * (2 * PER_WORKER - 10)
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for s, h, _ in every if s == 200)
    assert remaining == list(range(10))
    for status, _, body in every:
        if status == 429:
            assert body == {
                "error": {
                    "message": f"Rate limit reached for key {key['id']}: 10 requests per minute. "
                    "Retry later.",
                    "type": "rate_limit_error",
                    "param": None,
                    "code": "rpm_limit_exceeded",
                }
            }
    assert stderr.read_text().count("Started server process") == 2

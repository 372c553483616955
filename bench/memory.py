"""What a big chat request costs in memory: RSS figures per mode, and where the bytes go.

    python -m bench.memory [--modes native,mock,sdk] [--burst 16] [--env NAME=VALUE ...]
    python -m bench.memory --where [--modes native,mock,sdk] [--top 8]

The first form runs the gateway in its own process per mode (native and sdk in real mode against
the recording fake upstream, which holds each big reply for a second; mock without one) and
prints the figures tests/e2e/test_request_memory.py asserts on: baseline after warm-up, one
~4 MB request of ~113k short messages (peak over baseline, as a multiple of the body), a burst
of them at once, RSS after the burst, and RSS once the process has called malloc_trim(0) (what
the gateway really kept). `--env` adds variables to the gateway's environment, e.g. allocator
settings such as MALLOC_MMAP_THRESHOLD_=131072.

The second form follows one such request through the gateway's steps in this process under
tracemalloc (body read, validation, then each mode's upstream call, against bench/upstream.py in
its own process) and prints, per step, what it kept, its peak, and the source lines that had
allocated the most at that peak.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from tests.e2e.test_cli_process import free_port
from tests.e2e.test_request_memory import (
    BURST,
    MIB,
    big_messages,
    chat_body,
    gateway_env,
    gateway_process,
    measure,
    upstream_reply,
)
from tests.fake_upstream import FakeUpstream
from tests.fakes import MODEL, UPSTREAM_KEY

from ai_gateway.api.body import parse_chat_request, read_body
from ai_gateway.config.constants import DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_REQUEST_BYTES
from ai_gateway.providers.cerebras_client import CerebrasClient
from ai_gateway.providers.cerebras_mock import MockCerebrasClient
from ai_gateway.providers.wire import OpenAIWire, WireClient

ROOT = Path(__file__).resolve().parent.parent
MODES = ("native", "mock", "sdk")
READ_SIZE = 64 * 1024  # what uvicorn hands the app per body message, about
SDK_TIMEOUT_S = 1800.0  # the SDK transport takes tens of seconds of CPU per big request


def run_mode(mode: str, *, burst: int, extra: dict[str, str]) -> list[str]:
    """One gateway process in `mode`, measured; its report lines."""
    timeout = SDK_TIMEOUT_S if mode == "sdk" else 120.0
    extra = {"REQUEST_TIMEOUT_S": str(timeout), **extra}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        upstream = None
        if mode != "mock":
            upstream = stack.enter_context(FakeUpstream())
            upstream.reply_with(upstream_reply)
        env = gateway_env(mode, upstream, extra)
        gateway = stack.enter_context(gateway_process(env, Path(tmp)))
        figures = measure(gateway, upstream, burst=burst, timeout=timeout)
    lines = figures.lines()
    if set(figures.statuses) != {200}:
        lines.append(f"statuses       {sorted(set(figures.statuses))}")
    return lines


class PeakSnapshot:
    """A tracemalloc snapshot taken whenever traced memory reaches a new high (sampled every
    few milliseconds from a thread), compared with one taken at the start: the lines that
    allocated the most of what was held at a step's peak."""

    def __init__(self) -> None:
        self.start = tracemalloc.take_snapshot()
        self.peak: tracemalloc.Snapshot | None = None
        self._high = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PeakSnapshot":
        tracemalloc.reset_peak()
        self._high = tracemalloc.get_traced_memory()[0] + MIB
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            current = tracemalloc.get_traced_memory()[0]
            if current > self._high:
                self.peak = tracemalloc.take_snapshot()
                self._high = tracemalloc.get_traced_memory()[0] + MIB // 2

    def top_lines(self, count: int) -> list[str]:
        """The lines that had allocated the most, net, at the peak."""
        if self.peak is None:
            return ["      (no new high 1 MiB above the start)"]
        ignored = [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
        stats = self.peak.filter_traces(ignored).compare_to(self.start, "lineno")
        return [
            f"      {stat.size_diff / MIB:+7.1f} MiB {stat.count_diff:>+8} blocks  "
            f"{short(stat.traceback[0].filename)}:{stat.traceback[0].lineno}"
            for stat in stats[:count]
            if stat.size_diff >= MIB // 10
        ]


def short(filename: str) -> str:
    """A source file's name from its package on."""
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def traced(label: str, step: Awaitable[Any], *, body: int, top: int) -> Any:
    """Await `step` under tracemalloc; print what it kept, its peak and its top lines."""
    start = tracemalloc.get_traced_memory()[0]
    with PeakSnapshot() as peak:
        result = await step
    current, high = tracemalloc.get_traced_memory()
    print(
        f"  {label:<34} kept {(current - start) / MIB:6.1f} MiB, "
        f"peak +{(high - start) / MIB:6.1f} MiB = {(high - start) / body:5.2f}x the body"
    )
    print("\n".join(peak.top_lines(top)))
    return result


async def request_of(raw: bytes) -> Request:
    """A request whose body arrives in uvicorn-sized messages, each a new bytes object, as
    from the socket."""
    offsets = iter(range(0, len(raw), READ_SIZE))

    async def receive() -> dict[str, Any]:
        at = next(offsets, len(raw))
        chunk = raw[at : at + READ_SIZE]
        return {"type": "http.request", "body": chunk, "more_body": at + READ_SIZE < len(raw)}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


async def parsed(raw: bytes) -> Any:
    return parse_chat_request(raw, max_depth=DEFAULT_MAX_JSON_DEPTH)


@contextlib.contextmanager
def separate_upstream() -> Iterator[str]:
    """bench/upstream.py in its own process, so its memory is not traced with the gateway's."""
    port = free_port()
    command = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not ready(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/models", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.asynccontextmanager
async def upstream_client(mode: str, url: str) -> AsyncIterator[Any]:
    """The mode's client for Cerebras, as the registry builds it."""
    if mode == "mock":
        yield MockCerebrasClient()
    elif mode == "sdk":
        client = CerebrasClient(UPSTREAM_KEY, base_url=url, timeout=SDK_TIMEOUT_S)
        yield client
        await client.aclose()
    else:
        wire = WireClient(timeout=30.0)
        yield OpenAIWire(wire, provider="cerebras", base_url=url + "/v1", api_key=UPSTREAM_KEY)
        await wire.aclose()


async def follow(mode: str, url: str, *, top: int) -> None:
    """One big request through the gateway's steps, each traced."""
    raw = chat_body(big_messages())
    size = len(raw)
    print(f"{mode}: a {size / MIB:.1f} MiB body")
    async with upstream_client(mode, url) as client:
        read = read_body(await request_of(raw), DEFAULT_MAX_REQUEST_BYTES)
        body = await traced("read_body (64 KiB messages)", read, body=size, top=top)
        request = await traced("parse_chat_request", parsed(body), body=size, top=top)
        call = client.chat(MODEL, request.upstream_messages(), **request.upstream_params())
        await traced(f"{type(client).__name__}.chat", call, body=size, top=top)


def where(modes: Sequence[str], *, top: int) -> None:
    """Every mode's request followed step by step."""
    tracemalloc.start(1)
    with separate_upstream() as url:
        for mode in modes:
            asyncio.run(follow(mode, url, top=top))
            print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--burst", type=int, default=BURST)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--where", action="store_true", help="trace one request's steps")
    parser.add_argument("--top", type=int, default=8, help="source lines per step")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if args.where:
        where(modes, top=args.top)
        return
    extra = dict(item.split("=", 1) for item in args.env)
    for mode in modes:
        print(f"{mode}{' ' + ' '.join(args.env) if args.env else ''}")
        print("\n".join(run_mode(mode, burst=args.burst, extra=extra)), flush=True)
        print()


if __name__ == "__main__":
    main()

"""Closed-loop streaming load: N concurrent SSE streams, back to back, for T seconds.

Measures the time to the first SSE event (TTFE: request sent -> first `data:` line received)
and the whole stream's time, and prints one JSON line: streams/s, TTFE and total percentiles,
events per stream, errors. Only streams that start after the warm-up and end before the deadline
are counted.

    python -m bench.stream_client --url http://127.0.0.1:9100/v1/chat/completions \
        --model gpt-oss-120b --concurrency 16 --duration 10 --warmup 2 [--key KEY]
"""

import argparse
import asyncio
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.bodies import body_bytes

DONE = b"data: [DONE]"


@dataclass(slots=True)
class Stream:
    """One stream's outcome."""

    start: float
    end: float
    ttfe: float | None
    events: int
    ok: bool


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles in milliseconds of values in seconds (empty: zeros)."""
    if not values:
        return {f"p{p}": 0.0 for p in points}
    ordered = sorted(values)
    last = len(ordered) - 1
    return {f"p{p}": round(ordered[min(last, round(p / 100 * last))] * 1000, 3) for p in points}


def headers_for(key: str | None) -> dict[str, str]:
    """Content type, and the bearer key when there is one."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


async def one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> Stream:
    """Send one streaming request and read it to the end."""
    start = time.perf_counter()
    ttfe: float | None = None
    events = 0
    tail = b""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            ok = response.status == 200
            async for data in response.content.iter_any():
                if ttfe is None and b"data:" in data:
                    ttfe = time.perf_counter() - start
                events += data.count(b"data:")
                tail = (tail + data)[-32:]
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    return Stream(start, time.perf_counter(), ttfe, events, ok and DONE in tail)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Keep `concurrency` streams open until the deadline; summarise the measured window."""
    body, headers = body_bytes("2", args.model, stream=True), headers_for(args.key)
    begin = time.perf_counter()
    measure_from, deadline = begin + args.warmup, begin + args.warmup + args.duration
    results: list[Stream] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)

    async def worker() -> None:
        while time.perf_counter() < deadline:
            results.append(await one_stream(session, args.url, body, headers))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    window = [s for s in results if s.start >= measure_from and s.end <= deadline]
    good = [s for s in window if s.ok]
    return {
        "streams": len(good),
        "duration_s": args.duration,
        "streams_per_s": round(len(good) / args.duration, 1),
        "errors": len(window) - len(good),
        "events_per_stream": round(sum(s.events for s in good) / len(good), 2) if good else 0,
        "ttfe_ms": percentiles([s.ttfe for s in good if s.ttfe is not None]),
        "total_ms": percentiles([s.end - s.start for s in good]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="concurrent SSE streams, closed loop")
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="gpt-oss-120b")
    parser.add_argument("--key", default=None)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per stream")
    args = parser.parse_args()
    print(json.dumps(run_fast(run(args))))


def run_fast(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a client's main coroutine on uvloop when it is installed, else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()

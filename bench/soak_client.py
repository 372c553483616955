"""Open-loop load at a fixed rate for the soak run: JSON requests, every Nth one a stream.

Requests are started on a fixed schedule whatever the answers' speed (at most `--max-in-flight`
open at once; a request due while that many are open is counted as `skipped`). Prints one JSON
line: requests sent, errors, skipped, achieved rate and latency percentiles.

    python -m bench.soak_client --url URL --key KEY --rate 500 --duration 300 --stream-every 4
"""

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from bench.bodies import body_bytes
from bench.stream_client import headers_for, percentiles, run_fast

TICK_S = 0.005


async def one_request(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> float | None:
    """Seconds the whole answer took, or None if it failed."""
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            data = await response.read()
            ok = response.status == 200 and (b"[DONE]" in data or data.startswith(b"{"))
    except (aiohttp.ClientError, TimeoutError):
        return None
    return time.perf_counter() - start if ok else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start requests on schedule until the deadline, then wait for the last ones."""
    plain, stream = body_bytes("2", args.model), body_bytes("2", args.model, stream=True)
    headers = headers_for(args.key)
    latencies: list[float] = []
    counts = {"sent": 0, "errors": 0, "skipped": 0}
    in_flight: set[asyncio.Task[None]] = set()

    async def send(body: bytes) -> None:
        took = await one_request(session, args.url, body, headers)
        if took is None:
            counts["errors"] += 1
        else:
            latencies.append(took)

    connector = aiohttp.TCPConnector(limit=args.max_in_flight)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter()
        due = 0
        while (now := time.perf_counter()) < begin + args.duration:
            target = int((now - begin) * args.rate)
            while due < target:
                due += 1
                if len(in_flight) >= args.max_in_flight:
                    counts["skipped"] += 1
                    continue
                every = args.stream_every
                task = asyncio.create_task(send(stream if every and due % every == 0 else plain))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                counts["sent"] += 1
            await asyncio.sleep(TICK_S)
        elapsed = time.perf_counter() - begin
        if in_flight:
            await asyncio.wait(in_flight, timeout=args.timeout)
    return {
        **counts,
        "duration_s": round(elapsed, 3),
        "rate": round(counts["sent"] / elapsed, 1),
        "latency_ms": percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="fixed-rate open-loop load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="gpt-oss-120b")
    parser.add_argument("--key", default=None)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--stream-every", type=int, default=4, help="every Nth request streams")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(run_fast(run(args))))


if __name__ == "__main__":
    main()

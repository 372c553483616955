"""A minimal OTLP/HTTP trace receiver for the benchmark's traced row.

`POST /v1/traces` reads an `ExportTraceServiceRequest` (protobuf), counts the batch, its spans and
its bytes, and answers 200 with an empty protobuf body (an empty `ExportTraceServiceResponse`:
everything accepted); a body that does not parse is counted as rejected and answered 400.
`GET /stats` serves the counts as JSON, and they are printed as one JSON line at exit.

    python -m bench.otlp_sink --port 4318
"""

import argparse
import json
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROTOBUF = "application/x-protobuf"


@dataclass
class Stats:
    """What the sink has received since it started."""

    batches: int = 0
    spans: int = 0
    bytes: int = 0
    rejected: int = 0
    first_at: float | None = None
    last_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        """The counts, with the sink's own CPU seconds so far."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return asdict(self) | {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}


STATS_KEY = web.AppKey("stats", Stats)


def span_count(body: bytes) -> int:
    """Spans in one export request (DecodeError when it is not one)."""
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


async def traces(request: web.Request) -> web.Response:
    """Count one batch; 200 with an empty protobuf body, or 400 when it does not parse."""
    stats = request.app[STATS_KEY]
    body = await request.read()
    try:
        spans = span_count(body)
    except DecodeError:
        stats.rejected += 1
        return web.Response(status=400, body=b"", content_type=PROTOBUF)
    now = time.time()
    stats.batches += 1
    stats.spans += spans
    stats.bytes += len(body)
    stats.first_at = stats.first_at or now
    stats.last_at = now
    return web.Response(status=200, body=b"", content_type=PROTOBUF)


async def stats_view(request: web.Request) -> web.Response:
    """The counts so far, as JSON."""
    return web.json_response(request.app[STATS_KEY].snapshot())


async def print_stats(app: web.Application) -> None:
    """The counts, as one JSON line, when the sink stops."""
    print(json.dumps(app[STATS_KEY].snapshot()), flush=True)


def build_app() -> web.Application:
    """The sink's routes and its counters."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS_KEY] = Stats()
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats_view)
    app.on_cleanup.append(print_stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="OTLP/HTTP trace sink that counts what it gets")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    print(f"OTLP sink on http://{args.host}:{args.port}/v1/traces", flush=True)
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

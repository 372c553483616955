"""One side-by-side benchmark run: the fake upstream called directly, and through the gateway.

Starts the fake upstream and one gateway process per row, each on its own port and in its own
working directory (real mode, auth on, LOG_LEVEL=info): one per transport (`CEREBRAS_CLIENT=
native|sdk`) called with a static key; the native gateway with its usage ledger and metrics off
(`native-bare`) and with traces exported to a local OTLP sink (`native-traced`); and two native
gateways called with a virtual key whose limits never refuse (counted in memory, and in Redis),
the key created through the admin API once the gateway is up. Then measures every case (JSON
with a 2-message body at each concurrency, JSON with a 50-message body at concurrency 1, streams
at each concurrency) for every target in turn, repetition by repetition, and reports medians.
Writes `<out>/latest.json`, `<out>/latest.md`, `<out>/observability.md` (when the observed rows
ran) and the charts. `--soak SECONDS` instead runs each gateway at a fixed request rate and
samples its RSS every 5 s (`<out>/soak.json`, `<out>/soak.md`).

    python -m bench.run [--duration 10] [--reps 3] [--warmup 2] [--concurrency 1,16,64]
                        [--transports native,sdk]
                        [--targets direct,floor,native-bare,native,native-traced,vk-memory]
                        [--quick] [--soak 300] [--out bench/results]
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench import report
from bench.bodies import body_bytes

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "post.lua"
MODEL = "gpt-oss-120b"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.15
RSS_SAMPLE_S = 5.0
LIMITED_ROWS = {"vk-memory": "memory", "vk-redis": "redis"}
"""Rows called with a virtual key that has limits, and where the gateway counts them."""
LIMITED_TRANSPORT = "native"
"""The transport of every row that is not named after one (the limited and observed rows)."""
TRANSPORTS = ("native", "sdk")
BARE_ROW, TRACED_ROW, SAMPLED_ROW = "native-bare", "native-traced", "native-traced-10pct"
OBSERVED_ROWS = (BARE_ROW, TRACED_ROW, SAMPLED_ROW)
"""Rows of the native gateway that show what the usage ledger, metrics and tracing cost: with
the ledger and metrics off, and with traces exported too (`native` has the ledger and metrics,
the defaults, and no tracing; `native-traced` samples every request, the SDK's default, and
`native-traced-10pct` one in ten)."""
SAMPLED_SETTINGS = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
BARE_SETTINGS = {"USAGE_LEDGER": "false", "METRICS_ENABLED": "false"}
BASE_ROWS = {
    "vk-memory": "native",
    "vk-redis": "native",
    "native": BARE_ROW,
    TRACED_ROW: BARE_ROW,
    SAMPLED_ROW: BARE_ROW,
}
"""The row each row's cost is measured against, in the same run (when both ran)."""
FLOOR_ROW = "floor"
"""bench/floor.py: a minimal pass-through (auth, forward, relay bytes), the gateway's floor."""
NOT_GATEWAYS = ("direct", FLOOR_ROW)
ROW_ORDER = ("direct", FLOOR_ROW, BARE_ROW, "native", TRACED_ROW, SAMPLED_ROW, "sdk", *LIMITED_ROWS)
LEDGER_FILE = "ai-gateway.db"
"""A gateway's SQLite file in its working directory (no DATABASE_URL): its usage ledger."""
JOURNAL_DIR = "ai-gateway-journal"
NEVER_REFUSE = {"rpm_limit": 100_000_000, "tpm_limit": 2**31 - 1, "max_parallel_requests": 100_000}
"""Limits set on every dimension, so every request is counted, and too high to ever refuse (the
admin API takes limits up to 2**31 - 1)."""
INHERITED_SETTINGS = {
    "CI",
    "CEREBRAS_MOCK",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PREFIX",
    "GATEWAY_ADMIN_KEYS",
    "LIMITS_FAIL_MODE",
    *BARE_SETTINGS,
}
"""Settings of the environment the gateways do not inherit (nor any `OTEL_*`): each row sets
its own."""


@dataclass
class Target:
    """Where a measurement sends its requests: the upstream directly, or one gateway."""

    name: str
    port: int
    path: str
    model: str
    key: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    also_measured: list[int] = field(default_factory=list)
    """PIDs of processes the row depends on (Redis), whose CPU is counted with it."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"


@dataclass
class Case:
    """One load shape: JSON (2 or 50 messages) or streams, at one concurrency."""

    kind: str  # "json" or "stream"
    body: str  # "2" or "50" messages
    concurrency: int

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.body}msg-c{self.concurrency}"


@dataclass
class Run:
    """The processes this run started (stopped by PID at the end) and shared settings."""

    args: argparse.Namespace
    out: Path
    wrk: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    bodies: dict[str, Path] = field(default_factory=dict)
    redis_prefix: str | None = None
    """The Redis row's REDIS_PREFIX: unique to this run, its keys deleted at the end."""
    notes: dict[str, Any] = field(default_factory=dict)
    workdirs: dict[str, Path] = field(default_factory=dict)
    """Each gateway row's working directory (its SQLite file and usage journal)."""
    sink_port: int | None = None
    sink_log: Path | None = None
    """The OTLP sink of the traced row: its port, and its output (its counts at exit)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians are reported)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per measurement")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated")
    parser.add_argument("--transports", default="native,sdk", help="CEREBRAS_CLIENT values")
    parser.add_argument(
        "--targets",
        default=None,
        help="rows, comma-separated, of " + ", ".join(ROW_ORDER) + " (default: direct, the "
        "floor with one worker, the transports, and when native is one of them native-bare, "
        "native-traced, native-traced-10pct, vk-memory and vk-redis)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="vk-redis's Redis")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--route", choices=["unified", "cerebras"], default="unified")
    parser.add_argument("--quick", action="store_true", help="1 rep x 2 s, no warm-up (smoke)")
    parser.add_argument("--soak", type=int, default=0, metavar="SECONDS", help="soak mode")
    parser.add_argument("--soak-rate", type=float, default=500.0, help="soak requests/s")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="max s to wait for quiet")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results")
    parser.add_argument("--chart", type=Path, default=None, help="default docs/benchmark.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup, args.quiet_wait = 1, 2, 0, 0.0
    args.out = args.out or ROOT / "bench" / "results" / ("smoke" if args.quick else "")
    args.chart = args.chart or (args.out / "benchmark.png" if args.quick else None)
    args.chart = args.chart or ROOT / "docs" / "benchmark.png"
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    args.transports = [t.strip() for t in str(args.transports).split(",") if t.strip()]
    args.targets_given = args.targets is not None
    args.targets = targets_of(parser, args)
    args.transports = [t for t in args.targets if t in TRANSPORTS]
    return args


def targets_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The rows to measure, in order: direct, each static-key row, each limited row."""
    if args.targets is None:
        # The floor is one process: it is no measure for several workers, nor soaked.
        floor = [FLOOR_ROW] if args.workers == 1 and not args.soak else []
        wanted = ["direct", *floor, *args.transports]
        if LIMITED_TRANSPORT in args.transports and not args.soak:
            wanted += list(OBSERVED_ROWS) if args.workers == 1 else []
            wanted += [r for r in LIMITED_ROWS if args.workers == 1 or r != "vk-memory"]
    else:
        wanted = [t.strip() for t in str(args.targets).split(",") if t.strip()]
    unknown = [t for t in wanted if t not in ROW_ORDER]
    if unknown:
        parser.error(f"unknown targets {unknown}: use " + ", ".join(ROW_ORDER))
    if "vk-memory" in wanted and args.workers > 1:
        parser.error("vk-memory needs one worker: several count limits only in Redis")
    return sorted(dict.fromkeys(wanted), key=ROW_ORDER.index)


# Processes ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The wrk binary, installed from the distribution's packages when missing."""
    if path := shutil.which("wrk"):
        return path
    print("wrk not found: apt-get install -y wrk", flush=True)
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, check=False, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, timeout=600)
        subprocess.run(install, check=True, timeout=600)
    if path := shutil.which("wrk"):
        return path
    raise SystemExit("wrk is not installed and could not be installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    """Direct child PIDs (uvicorn's workers under its supervisor, a gateway process's helper
    processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in task.read_text().split()]
    return found


def descendants_of(pid: int) -> list[int]:
    """Every process under `pid` (workers, and each one's helper processes)."""
    found = children_of(pid)
    return found + [p for child in found for p in descendants_of(child)]


HELPER_MODULES = (b"ai_gateway.usage.writer", b"ai_gateway.observability.span_export")
"""The child processes a gateway process starts: its ledger writer, and with tracing on its
span exporter."""


def is_helper(pid: int) -> bool:
    """Whether `pid` is one of a gateway process's helper processes (HELPER_MODULES)."""
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        return any(module in command for module in HELPER_MODULES)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this run started, and any children it left, by PID."""
    kids = children_of(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGKILL)


def start(run: Run, cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> Any:
    """Start a long-running process with its output appended to `log`."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=sink, env=env, cwd=cwd, start_new_session=True
        )
    run.procs.append(proc)
    return proc


def request(
    port: int, method: str, path: str, body: bytes | None = None, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request to 127.0.0.1."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited ({proc.returncode}); see {log}:\n{tail(log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(port, "GET", path)[0] < 500:
                return
        time.sleep(0.1)
    raise SystemExit(f"not ready after 30 s; see {log}:\n{tail(log)}")


def tail(path: Path, size: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_bytes()[-size:].decode(errors="replace")
    return ""


def gateway_env(transport: str, upstream_port: int, key: str) -> dict[str, str]:
    """The environment of one gateway: real mode against the fake upstream, auth on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in INHERITED_SETTINGS and not k.startswith("OTEL_")
    }
    return env | {
        "CEREBRAS_API_KEY": "csk-bench-upstream-key",
        "CEREBRAS_BASE_URL": f"http://{HOST}:{upstream_port}",
        "CEREBRAS_MOCK": "false",
        "CEREBRAS_CLIENT": transport,
        "GATEWAY_API_KEYS": key,
        "AI_GATEWAY_ENV": "production",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }


def start_targets(run: Run, workdir: Path) -> list[Target]:
    """The fake upstream (the `direct` target, when asked for) and one gateway per other row."""
    logs = run.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    up_port = free_port()
    up_log = logs / "upstream.log"
    up_log.write_bytes(b"")
    cmd = [sys.executable, "-m", "bench.upstream", "--port", str(up_port)]
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    upstream = start(run, cmd, up_log, env, ROOT)
    wait_ready(upstream, up_port, "/v1/models", up_log)
    targets = []
    if "direct" in run.args.targets:
        targets.append(Target("direct", up_port, "/v1/chat/completions", MODEL, proc=upstream))
    key = "sk-bench-" + secrets.token_hex(12)
    if FLOOR_ROW in run.args.targets:
        targets.append(start_floor(run, up_port, key))
    if TRACED_ROW in run.args.targets or SAMPLED_ROW in run.args.targets:
        start_sink(run)
    for name in run.args.targets:
        if name not in NOT_GATEWAYS:
            targets.append(start_gateway(run, name, up_port, key, workdir / f"gateway-{name}"))
    return targets


def start_floor(run: Run, upstream_port: int, key: str) -> Target:
    """The pass-through floor (bench/floor.py), called with the gateways' static key."""
    port, log = free_port(), run.out / "logs" / "floor.log"
    log.write_bytes(b"")
    cmd = [sys.executable, "-m", "bench.floor", "--port", str(port), "--key", key]
    cmd += ["--upstream", f"http://{HOST}:{upstream_port}"]
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    proc = start(run, cmd, log, env, ROOT)
    wait_ready(proc, port, "/v1/models", log)
    return Target(FLOOR_ROW, port, "/v1/chat/completions", MODEL, key, proc, log)


def start_sink(run: Run) -> None:
    """The OTLP/HTTP sink the traced row exports its spans to (stopped after the gateways)."""
    port, log = free_port(), run.out / "logs" / "otlp-sink.log"
    log.write_bytes(b"")
    cmd = [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)]
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    wait_ready(start(run, cmd, log, env, ROOT), port, "/stats", log)
    run.sink_port, run.sink_log = port, log


def row_settings(run: Run, name: str) -> dict[str, str]:
    """What an observed row sets on top of the native gateway's environment."""
    if name == BARE_ROW:
        return dict(BARE_SETTINGS)
    sink = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{run.sink_port}"}
    if name == TRACED_ROW:
        return sink
    if name == SAMPLED_ROW:
        return sink | SAMPLED_SETTINGS
    return {}


def start_gateway(run: Run, name: str, upstream_port: int, key: str, workdir: Path) -> Target:
    """One gateway row in its own working directory (so its own SQLite file): a static key, or
    a virtual key with limits created through the admin API once the gateway is up."""
    limits = LIMITED_ROWS.get(name)
    env = gateway_env(name if name in TRANSPORTS else LIMITED_TRANSPORT, upstream_port, key)
    env |= row_settings(run, name)
    admin_key = "sk-bench-admin-" + secrets.token_hex(12)
    if limits:
        env["GATEWAY_ADMIN_KEYS"] = admin_key
    if limits == "redis":
        run.redis_prefix = "aigw-bench-" + secrets.token_hex(6)
        # closed: a Redis call that fails is a 503 the run counts, never an uncounted pass.
        env |= {"REDIS_URL": run.args.redis_url, "REDIS_PREFIX": run.redis_prefix}
        env["LIMITS_FAIL_MODE"] = "closed"
    workdir.mkdir(parents=True, exist_ok=True)
    run.workdirs[name] = workdir
    port, log = free_port(), run.out / "logs" / f"gateway-{name}.log"
    log.write_bytes(b"")
    cmd = [str(Path(sys.executable).with_name("ai-gateway")), "serve", "--host", HOST]
    cmd += ["--port", str(port)]
    if run.args.workers > 1:
        cmd += ["--workers", str(run.args.workers)]
    proc = start(run, cmd, log, env, workdir)
    wait_ready(proc, port, "/healthz", log)
    unified = run.args.route == "unified"
    path = "/v1/chat/completions" if unified else "/cerebras/v1/chat/completions"
    model = f"cerebras/{MODEL}" if unified else MODEL
    target = Target(name, port, path, model, key, proc, log)
    if limits:
        target.key = create_key(port, admin_key, f"bench-{name}")
    if limits == "redis":
        target.also_measured = [pid for pid in [redis_pid(run.args.redis_url)] if pid]
    return target


def create_key(port: int, admin_key: str, name: str) -> str:
    """A virtual key with NEVER_REFUSE limits, through the admin API; its secret."""
    body = json.dumps({"name": name, **NEVER_REFUSE}).encode()
    status, _, data = request(port, "POST", "/admin/v1/keys", body, admin_key)
    if status != 201:
        raise SystemExit(f"{name}: creating the virtual key failed: {status} {data[:300]!r}")
    secret: str = json.loads(data)["key"]
    return secret


# Redis ----------------------------------------------------------------------------------------


def redis_client(url: str) -> "redis.Redis":
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def redis_problem(url: str) -> str | None:
    """Why the Redis row cannot run (None when Redis answers)."""
    client = redis_client(url)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        return f"Redis at {url} did not answer ({type(error).__name__}: {error})"
    finally:
        client.close()
    return None


def redis_pid(url: str) -> int | None:
    """The Redis server's PID (its CPU is counted with the Redis row), when on this machine."""
    client = redis_client(url)
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every Redis key under `prefix:` (the run's own); how many there were."""
    client = redis_client(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


def check_target(target: Target) -> dict[str, Any]:
    """One JSON and one streamed request must succeed in real mode (a limited row's answer with
    its `x-ratelimit-*` headers: the limits were counted); returns what was seen."""
    plain = body_bytes("2", target.model)
    status, headers, data = request(target.port, "POST", target.path, plain, target.key)
    if status != 200 or b'"choices"' not in data or "x-ai-gateway-mock" in headers:
        raise SystemExit(f"{target.name}: bad answer {status} {headers} {data[:300]!r}")
    if target.name in LIMITED_ROWS and "x-ratelimit-limit-requests" not in headers:
        raise SystemExit(f"{target.name}: no x-ratelimit-* headers: {headers}")
    stream = body_bytes("2", target.model, stream=True)
    s_status, _, s_data = request(target.port, "POST", target.path, stream, target.key)
    if s_status != 200 or not s_data.rstrip().endswith(b"data: [DONE]"):
        raise SystemExit(f"{target.name}: bad stream {s_status} {s_data[-300:]!r}")
    seen = {"server_timing": headers.get("server-timing"), "stream_events": s_data.count(b"data:")}
    limit_headers = {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}
    return seen | ({"ratelimit_headers": limit_headers} if limit_headers else {})


def server_timing(target: Target, count: int) -> dict[str, float] | None:
    """Medians of the gateway's `Server-Timing` (gw = its own time, upstream) at c=1."""
    body = body_bytes("2", target.model)
    figures: dict[str, list[float]] = {"gw": [], "upstream": []}
    for _ in range(count):
        header = request(target.port, "POST", target.path, body, target.key)[1].get("server-timing")
        if not header:
            return None
        for part in header.split(","):
            name, _, dur = part.strip().partition(";dur=")
            with contextlib.suppress(ValueError):
                figures.setdefault(name, []).append(float(dur))
    return {f"{k}_ms": round(statistics.median(v), 3) for k, v in figures.items() if v}


def transport_setting_known() -> bool | None:
    """Whether the gateway's settings read CEREBRAS_CLIENT (else every row runs the SDK)."""
    code = (
        "from ai_gateway.config.settings import Settings\n"
        "print('cerebras_client' in Settings.model_fields)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return {"True": True, "False": False}.get(done.stdout.strip())


# CPU and memory -------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def system_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


class CpuMeter:
    """CPU used by other processes (not this run's) while a measurement runs, in cores."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.busy = system_busy_s()
        self.ours = self.ours_s()

    def ours_s(self) -> float:
        pids = [p for pid in self.pids for p in (pid, *descendants_of(pid))]
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return sum(map(proc_cpu_s, pids)) + sum((r.ru_utime + r.ru_stime) for r in (own, kids))

    def foreign_cores(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-3)
        foreign = (system_busy_s() - self.busy) - (self.ours_s() - self.ours)
        return round(max(foreign, 0.0) / elapsed, 3)


def wait_quiet(pids: list[int], limit_s: float) -> float:
    """Wait (up to `limit_s`) until other processes use less than QUIET_CORES; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        meter = CpuMeter(pids)
        time.sleep(0.5)
        if meter.foreign_cores() < QUIET_CORES:
            break
    return round(time.monotonic() - started, 1)


def status_kib(pid: int, field_name: str) -> int:
    """A `VmHWM`/`VmRSS` figure of /proc/<pid>/status in KiB (0 if gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def gateway_kib(proc: subprocess.Popen[bytes], field_name: str) -> int:
    """The serving processes' figure: the sum over the workers with --workers, else the
    process's (their helper processes apart: `helpers_kib`)."""
    workers = [pid for pid in children_of(proc.pid) if not is_helper(pid)]
    return sum(status_kib(pid, field_name) for pid in (workers or [proc.pid]))


def helpers_kib(proc: subprocess.Popen[bytes], field_name: str) -> int:
    """The gateway's helper processes' figure (a ledger writer, and a span exporter with
    tracing on, per serving process)."""
    helpers = [pid for pid in descendants_of(proc.pid) if is_helper(pid)]
    return sum(status_kib(pid, field_name) for pid in helpers)


# Measurements ---------------------------------------------------------------------------------


def run_wrk(run: Run, target: Target, case: Case, seconds: int) -> dict[str, Any]:
    """wrk with bench/post.lua; -t1 at concurrency 1, else -t2 (the machine has 2 cores)."""
    threads = 1 if case.concurrency == 1 else 2
    body = run.bodies[f"{case.body}-{target.model}"]
    cmd = [run.wrk, f"-t{threads}", f"-c{case.concurrency}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(LUA), target.url, "--", f"body={body}"]
    cmd += [f"key={target.key}"] if target.key else []
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    data = json.loads(line)
    lat = data["latency_ms"]
    return {
        "rps": data["rps"],
        "requests": data["requests"],
        "errors": sum(data["errors"].values()),
        "error_kinds": data["errors"],
        **{k: lat[k] for k in ("p50", "p90", "p99")},
    }


def run_streams(target: Target, case: Case, seconds: int) -> dict[str, Any]:
    """bench.stream_client: streams/s and time to first event (p50/p90/p99 are TTFE)."""
    cmd = [sys.executable, "-m", "bench.stream_client", "--url", target.url]
    cmd += ["--model", target.model, "--concurrency", str(case.concurrency)]
    cmd += ["--duration", str(seconds)]
    cmd += ["--key", target.key] if target.key else []
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 90, check=True, env=env
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "rps": data["streams_per_s"],
        "requests": data["streams"],
        "errors": data["errors"],
        "events_per_stream": data["events_per_stream"],
        **data["ttfe_ms"],
        "total_p50": data["total_ms"]["p50"],
    }


def log_counts(target: Target) -> dict[str, int]:
    """Request, warning and error lines the gateway logged since the last call (then emptied)."""
    if target.log is None:
        return {}
    data = target.log.read_bytes()
    os.truncate(target.log, 0)
    return {
        "log_requests": data.count(b'"event":"request"'),
        "log_warnings": data.count(b'"level":"warning"'),
        "log_errors": data.count(b'"level":"error"'),
    }


def server_cpu_s(target: Target) -> float:
    """CPU seconds of the measured server: the gateway (with its workers and their helper
    processes) or the upstream."""
    if target.proc is None:
        return 0.0
    return sum(proc_cpu_s(pid) for pid in (target.proc.pid, *descendants_of(target.proc.pid)))


def measure(run: Run, target: Target, case: Case, pids: list[int]) -> dict[str, Any]:
    """Warm up, then one measured repetition; with the CPU it cost and what others took (the
    CPU of a process the row depends on, Redis, is the row's own, not other processes')."""
    args = run.args
    waited = wait_quiet(pids, args.quiet_wait)
    load = run_streams if case.kind == "stream" else partial(run_wrk, run)
    if args.warmup:
        load(target, case, args.warmup)
    log_counts(target)
    meter, cpu_before = CpuMeter(pids + target.also_measured), server_cpu_s(target)
    also_before = sum(map(proc_cpu_s, target.also_measured))
    result = load(target, case, args.duration)
    requests = max(result["requests"], 1)
    cpu_us = (server_cpu_s(target) - cpu_before) * 1e6 / requests
    result |= {"cpu_us_per_req": round(cpu_us, 1), "foreign_cores": meter.foreign_cores()}
    if target.also_measured:
        also_us = (sum(map(proc_cpu_s, target.also_measured)) - also_before) * 1e6 / requests
        result["redis_cpu_us_per_req"] = round(also_us, 1)
    result["quiet_wait_s"] = waited
    if target.proc is not None and target.name not in NOT_GATEWAYS:
        result["rss_peak_mib"] = round(gateway_kib(target.proc, "VmHWM") / 1024, 1)
        if helpers := helpers_kib(target.proc, "VmHWM"):
            result["helpers_rss_peak_mib"] = round(helpers / 1024, 1)
        result |= log_counts(target)
    return result


def cases_of(args: argparse.Namespace) -> list[Case]:
    cases = [Case("json", "2", c) for c in args.concurrency]
    if 1 in args.concurrency:
        cases.append(Case("json", "50", 1))
    return cases + [Case("stream", "2", c) for c in args.concurrency]


def run_matrix(run: Run, targets: list[Target]) -> list[dict[str, Any]]:
    """Every case, repetition by repetition, every target in turn (so drift hits all alike)."""
    pids = [proc.pid for proc in run.procs]
    rows: list[dict[str, Any]] = []
    for case in cases_of(run.args):
        for rep in range(run.args.reps):
            for target in targets:
                result = measure(run, target, case, pids)
                row: dict[str, Any] = {"case": case.key, "kind": case.kind, "body": case.body}
                row |= {"concurrency": case.concurrency, "target": target.name, "rep": rep}
                rows.append(row | result)
                print(report.progress_line(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repetitions; deltas against `direct` in the same case, and the comparisons
    between rows (`compare`)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["target"]), []).append(row)
    summary: list[dict[str, Any]] = []
    for reps in groups.values():
        first = reps[0]
        entry = {k: first[k] for k in ("case", "kind", "body", "concurrency", "target")}
        for name in (
            "rps",
            "p50",
            "p90",
            "p99",
            "total_p50",
            "events_per_stream",
            "cpu_us_per_req",
            "redis_cpu_us_per_req",
        ):
            if name in first:
                entry[name] = round(statistics.median(r[name] for r in reps), 3)
        entry["errors"] = sum(r["errors"] for r in reps)
        entry["reps"] = len(reps)
        entry["foreign_cores_max"] = max(r["foreign_cores"] for r in reps)
        if "rss_peak_mib" in first:
            entry["rss_peak_mib"] = max(r["rss_peak_mib"] for r in reps)
        summary.append(entry)
    direct = {s["case"]: s for s in summary if s["target"] == "direct"}
    for entry in summary:
        base = direct.get(entry["case"])
        if base is not None and entry["target"] != "direct":
            entry["d_p50"] = round(entry["p50"] - base["p50"], 3)
            entry["d_p99"] = round(entry["p99"] - base["p99"], 3)
    compare(summary)
    paired_changes(rows, summary)
    return summary


def paired_changes(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    """Each compared row's throughput change against its base row in every repetition, from
    the two measurements of that repetition (taken in the same pass over the rows, minutes
    apart at most, so a drift of the machine between repetitions cancels out):
    `rps_change_reps`, and their median `rps_change_paired_pct`. Their spread is the run's own
    measure of its noise. A repetition without both measurements is left out."""
    by_rep = {(r["case"], r["target"], r["rep"]): r["rps"] for r in rows}
    for entry in summary:
        base = entry.get("base_target")
        if base is None:
            continue
        changes = []
        for (case, target, rep), rps in by_rep.items():
            base_rps = by_rep.get((case, base, rep))
            if case == entry["case"] and target == entry["target"] and base_rps:
                changes.append(round((rps / base_rps - 1) * 100, 1))
        if changes:
            entry["rps_change_reps"] = changes
            entry["rps_change_paired_pct"] = round(statistics.median(changes), 2)


def compare(summary: list[dict[str, Any]]) -> None:
    """Each row's cost against its base row (BASE_ROWS) and each gateway row against the floor,
    in the same case; a stream's CPU per event beyond a JSON request's, per row."""
    by_row = {(s["case"], s["target"]): s for s in summary}
    for entry in summary:
        base = by_row.get((entry["case"], BASE_ROWS.get(entry["target"], "")))
        if base is not None:
            entry |= cost_against(entry, base)
        floor = by_row.get((entry["case"], FLOOR_ROW))
        if floor is not None and entry["target"] not in NOT_GATEWAYS:
            entry |= against_floor(entry, floor)
        json = by_row.get((f"json-2msg-c{entry['concurrency']}", entry["target"]))
        if entry["kind"] == "stream" and json is not None and entry.get("events_per_stream"):
            extra = entry["cpu_us_per_req"] - json["cpu_us_per_req"]
            entry["cpu_us_per_event"] = round(extra / entry["events_per_stream"], 1)


def against_floor(entry: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """A gateway row against the pass-through floor in the same case: its throughput as a
    fraction of the floor's, and its p50 (a stream's time to first event) over the floor's."""
    return {
        "of_floor": round(entry["rps"] / floor["rps"], 3) if floor["rps"] else None,
        "d_p50_floor": round(entry["p50"] - floor["p50"], 3),
    }


def cost_against(entry: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A row's cost against its base row (`base_target`: the static-key row for a limited row,
    `native-bare` for an observed one): throughput change in %, latency and CPU per request
    changes (the `_static` keys are against `base_target`, whichever it is)."""
    return {
        "base_target": base["target"],
        "rps_change_pct": round((entry["rps"] / base["rps"] - 1) * 100, 2) if base["rps"] else None,
        "d_p50_static": round(entry["p50"] - base["p50"], 3),
        "d_p99_static": round(entry["p99"] - base["p99"], 3),
        "d_cpu_us_static": round(entry["cpu_us_per_req"] - base["cpu_us_per_req"], 1),
    }


# Soak -----------------------------------------------------------------------------------------


def soak_one(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Fixed-rate load for `args.soak` seconds; the gateway's RSS sampled every 5 s."""
    assert target.proc is not None  # noqa: S101 - gateways always have a process
    base = [sys.executable, "-m", "bench.soak_client", "--url", target.url, "--model", target.model]
    base += ["--key", target.key or "", "--rate", str(args.soak_rate)]
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    warm = [*base, "--duration", str(max(args.warmup, 5))]
    subprocess.run(warm, capture_output=True, timeout=args.warmup + 120, check=True, env=env)
    log_counts(target)
    client = subprocess.Popen(
        [*base, "--duration", str(args.soak)], stdout=subprocess.PIPE, env=env
    )
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    try:
        while client.poll() is None and time.monotonic() - began < args.soak + 120:
            rss = gateway_kib(target.proc, "VmRSS") / 1024
            samples.append((round(time.monotonic() - began, 1), round(rss, 1)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.wait(timeout=RSS_SAMPLE_S)
        out = client.communicate(timeout=120)[0].decode()
    finally:
        stop(client)
    load = json.loads(out.strip().splitlines()[-1])
    values = [rss for _, rss in samples]
    first = values[0]
    return {
        "target": target.name,
        "seconds": args.soak,
        "rate": args.soak_rate,
        "load": load,
        "rss_samples_mib": samples,
        "rss_min_mib": min(values),
        "rss_max_mib": max(values),
        "rss_first_mib": first,
        "rss_last_mib": values[-1],
        "within_10pct": all(0.9 * first <= v <= 1.1 * first for v in values),
        "rss_peak_mib": round(gateway_kib(target.proc, "VmHWM") / 1024, 1),
        **log_counts(target),
    }


# Main -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else "",
    }


def git_commit() -> str:
    """The commit measured, marked when src/ has uncommitted changes (read-only git calls)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/" if dirty else "")


def ledger_rows(database: Path) -> int | None:
    """Rows in a gateway's `usage_ledger` table (None: no SQLite file, or no such table)."""
    if not database.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM usage_ledger").fetchone()[0])
    except sqlite3.Error:
        return None


def ledger_note(run: Run) -> dict[str, dict[str, int | None]]:
    """Each gateway row's usage ledger once it has stopped: the rows stored in its table and
    the bytes left in its journal (None: no journal directory): whether the ledger was on."""
    found: dict[str, dict[str, int | None]] = {}
    for name, workdir in run.workdirs.items():
        journal = workdir / JOURNAL_DIR
        left = None
        if journal.is_dir():
            left = sum(p.stat().st_size for p in journal.rglob("*") if p.is_file())
        found[name] = {"ledger_rows": ledger_rows(workdir / LEDGER_FILE), "journal_bytes": left}
    return found


def sink_note(log: Path) -> dict[str, Any] | None:
    """The OTLP sink's counts, as it printed them when it stopped (None: no such line)."""
    for line in reversed(tail(log).splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                counts: dict[str, Any] = json.loads(line)
                return counts
    return None


def note_after_stop(run: Run) -> None:
    """What the stopped processes left: the ledgers' rows, the spans the sink received."""
    with contextlib.suppress(OSError):
        run.notes["ledger"] = ledger_note(run)
    if run.sink_log is not None:
        run.notes["otlp_sink"] = sink_note(run.sink_log)


@contextlib.contextmanager
def stopped_on_exit(run: Run) -> Iterator[None]:
    """Stop every process this run started, whatever happens (SIGTERM included)."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        for proc in reversed(run.procs):  # the gateways first: they flush their spans
            stop(proc)
        note_after_stop(run)
        if run.redis_prefix is not None:
            try:
                deleted = delete_prefix(run.args.redis_url, run.redis_prefix)
            except (redis.RedisError, OSError) as error:
                print(f"could not delete Redis keys under {run.redis_prefix}: {error}", flush=True)
            else:
                run.notes["redis_keys_deleted"] = deleted
                print(f"deleted {deleted} Redis keys under {run.redis_prefix}:", flush=True)
        signal.signal(signal.SIGTERM, previous)


def limits_chart_path(chart: Path) -> Path:
    """Where the limited rows' chart goes: beside the main chart (docs/benchmark-limits.png)."""
    return chart.with_name(f"{chart.stem}-limits{chart.suffix}")


def observability_chart_path(chart: Path) -> Path:
    """Where the observed rows' chart goes: beside the main chart
    (docs/benchmark-observability.png)."""
    return chart.with_name(f"{chart.stem}-observability{chart.suffix}")


def drop_unreachable_redis(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """Without a Redis to talk to, the Redis row cannot run: an error when it was asked for by
    name, else the row is left out (and the report says so)."""
    if "vk-redis" not in args.targets:
        return
    problem = redis_problem(args.redis_url)
    if problem is None:
        return
    if args.targets_given:
        raise SystemExit(f"vk-redis: {problem}")
    print(f"leaving out vk-redis: {problem}", flush=True)
    args.targets.remove("vk-redis")
    meta["skipped"] = {"vk-redis": problem}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args, args.out, ensure_wrk())
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        "transport_setting_known": transport_setting_known(),
    }
    drop_unreachable_redis(args, meta)
    meta["config"] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "chart"
    }
    if any(t in LIMITED_ROWS for t in args.targets):
        meta["virtual_key_limits"] = NEVER_REFUSE
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir, stopped_on_exit(run):
        for kind in ("2", "50"):
            for model in (MODEL, f"cerebras/{MODEL}"):
                path = Path(workdir) / f"body-{kind}-{model.replace('/', '_')}.json"
                path.write_bytes(body_bytes(kind, model))
                run.bodies[f"{kind}-{model}"] = path
        targets = start_targets(run, Path(workdir))
        meta["redis_prefix"] = run.redis_prefix
        settings = {name: row_settings(run, name) for name in args.targets}
        meta["row_settings"] = {name: env for name, env in settings.items() if env}
        meta["checks"] = {t.name: check_target(t) for t in targets}
        if args.soak:
            soak = [soak_one(t, args) for t in targets if t.name not in NOT_GATEWAYS]
            result = {"meta": meta, "soak": soak}
            write(args.out / "soak.json", json.dumps(result, indent=2))
            write(args.out / "soak.md", report.soak_markdown(result))
            print(report.soak_markdown(result))
            return
        probes = 50 if args.quick else 300
        meta["server_timing"] = {
            t.name: server_timing(t, probes) for t in targets if t.name not in NOT_GATEWAYS
        }
        rows = run_matrix(run, targets)
    meta |= run.notes
    result = {"meta": meta, "summary": summarise(rows), "measurements": rows}
    soak_path = args.out / "soak.json"
    soak_result = json.loads(soak_path.read_text()) if soak_path.exists() else None
    markdown = report.markdown(result, soak_result)
    write(args.out / "latest.json", json.dumps(result, indent=2))
    write(args.out / "latest.md", markdown)
    charts = [args.chart]
    report.chart(result, args.chart)
    if report.limited_rows(result):
        charts.append(limits_chart_path(args.chart))
        report.limits_chart(result, charts[-1])
    written = [args.out / "latest.json", args.out / "latest.md"]
    if report.observed_rows(result):
        written.append(args.out / "observability.md")
        write(written[-1], report.observability_markdown(result))
        charts.append(observability_chart_path(args.chart))
        report.observability_chart(result, charts[-1])
    print(markdown)
    print("wrote " + ", ".join(map(str, written + charts)))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + ("" if text.endswith("\n") else "\n"))


if __name__ == "__main__":
    main()

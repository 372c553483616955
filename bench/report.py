"""Reports of a run: progress lines, the Markdown tables, the targets and the chart."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True)
class Budget:
    """What a limited row may cost against the static-key row of its run, at concurrency 1."""

    rps_pct: float
    """The most its throughput may drop, in %."""
    p50_ms: float
    """The most its p50 latency (a stream's: time to first event) may grow, in ms."""

    def __str__(self) -> str:
        return f"throughput ≥ -{self.rps_pct:g}%, p50 ≤ +{self.p50_ms:g} ms"


STATIC_ROW = "native"
"""The limited rows' transport, called with a static key (no limits): their baseline."""
LIMITED_LABELS = {
    "vk-memory": "gateway + virtual key, in-memory limits",
    "vk-redis": "gateway + virtual key, Redis limits",
}
BUDGETS = {"vk-memory": Budget(5.0, 0.05), "vk-redis": Budget(20.0, 0.3)}
ROW_LABELS = {
    **LIMITED_LABELS,
    "native-bare": "gateway native, no ledger or metrics",
    "native-traced": "gateway native + tracing",
    "native-traced-10pct": "gateway native + tracing, 1 in 10 sampled",
}
BARE_ROW = "native-bare"
"""The native gateway with its usage ledger and metrics off: the observed rows' baseline."""
OBSERVED = {
    "native": "ledger + metrics",
    "native-traced": "ledger + metrics + tracing (every request)",
    "native-traced-10pct": "ledger + metrics + tracing (1 in 10 sampled)",
}
"""The rows measured against the bare row, and what each has on."""
OBSERVED_BUDGET_PCT = 10.0
"""The most the ledger, metrics and tracing together may cost in throughput, in %."""
BSP_DEFAULTS = "5 s schedule delay, 512 spans per export, a queue of 2,048 spans"
"""The OpenTelemetry SDK's batch span processor defaults, which the traced row runs with."""
FLOOR_ROW = "floor"
"""bench/floor.py: the least any gateway does (auth, forward, relay bytes)."""
CASE_NAMES = {"json-2msg": "JSON 2 msg", "json-50msg": "JSON 50 msg", "stream-2msg": "streams"}


def progress_line(row: Row) -> str:
    """One measured repetition, as printed while the run goes."""
    unit = "streams/s" if row["kind"] == "stream" else "req/s"
    text = (
        f"{row['case']:<20} {row['target']:<13} rep {row['rep'] + 1}: {row['rps']:>9.1f} {unit}"
        f"  p50 {row['p50']:.3f}  p99 {row['p99']:.3f} ms  errors {row['errors']}"
        f"  cpu {row['cpu_us_per_req']:.0f} µs/req  other-cpu {row['foreign_cores']:.2f}"
    )
    if "redis_cpu_us_per_req" in row:
        text += f"  redis-cpu {row['redis_cpu_us_per_req']:.0f} µs/req"
    if "rss_peak_mib" in row:
        text += f"  peak {row['rss_peak_mib']} MiB"
    if "helpers_rss_peak_mib" in row:
        text += f" (+ helper processes {row['helpers_rss_peak_mib']} MiB)"
    return text


def num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"


def pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def label(meta: Row, target: str) -> str:
    """The row's name; a transport the gateway does not read yet is marked."""
    if target == "direct":
        return "direct (limit)"
    if target == FLOOR_ROW:
        return "pass-through floor"
    known = meta.get("transport_setting_known")
    return ROW_LABELS.get(target, f"gateway {target}") + ("" if known else " †")


def gateway_rows(result: Row) -> list[str]:
    """The gateway rows of a run, in the run's order."""
    every = dict.fromkeys(s["target"] for s in result["summary"])
    return [t for t in every if t not in ("direct", FLOOR_ROW)]


def limited_rows(result: Row) -> list[str]:
    """The rows called with a limited virtual key that have a static-key row to compare with."""
    return [t for t in gateway_rows(result) if t in BUDGETS and has_static(result, t)]


def has_static(result: Row, target: str) -> bool:
    return has_base(result, target, STATIC_ROW)


def has_base(result: Row, target: str, base: str) -> bool:
    """Whether the row was measured against `base` (its cost figures are against it)."""
    return any(s.get("base_target") == base for s in result["summary"] if s["target"] == target)


def cost_of(entry: Row, base: str) -> Row:
    """The row's cost figures when they are against `base`, else none."""
    return entry if entry.get("base_target") == base else {}


def json_table(result: Row) -> list[str]:
    lines = [
        "| Body | c | Row | req/s | of floor | p50 ms | p90 ms | p99 ms | Δp50 ms | Δp99 ms "
        "| Errors | CPU µs/req | Peak RSS MiB |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in result["summary"]:
        if s["kind"] != "json":
            continue
        lines.append(
            f"| {s['body']} msg | {s['concurrency']} | {label(result['meta'], s['target'])} "
            f"| {num(s['rps'], 0)} | {pct(s.get('of_floor'))} | {num(s['p50'], 3)} "
            f"| {num(s['p90'], 3)} | {num(s['p99'], 3)} "
            f"| {num(s.get('d_p50'), 3, True)} | {num(s.get('d_p99'), 3, True)} | {s['errors']} "
            f"| {num(s.get('cpu_us_per_req'), 0)} | {num(s.get('rss_peak_mib'), 1)} |"
        )
    return lines


def stream_table(result: Row) -> list[str]:
    lines = [
        "| c | Row | streams/s | of floor | TTFE p50 ms | TTFE p90 ms | TTFE p99 ms "
        "| ΔTTFE p50 ms | stream p50 ms | Errors | CPU µs/stream | Extra CPU µs/event "
        "| Peak RSS MiB |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in result["summary"]:
        if s["kind"] != "stream":
            continue
        lines.append(
            f"| {s['concurrency']} | {label(result['meta'], s['target'])} | {num(s['rps'], 0)} "
            f"| {pct(s.get('of_floor'))} | {num(s['p50'], 3)} | {num(s['p90'], 3)} "
            f"| {num(s['p99'], 3)} | {num(s.get('d_p50'), 3, True)} | {num(s.get('total_p50'), 3)} "
            f"| {s['errors']} | {num(s.get('cpu_us_per_req'), 0)} "
            f"| {num(s.get('cpu_us_per_event'), 1)} | {num(s.get('rss_peak_mib'), 1)} |"
        )
    return lines


def find(result: Row, case: str, target: str) -> Row | None:
    for s in result["summary"]:
        if s["case"] == case and s["target"] == target:
            return dict(s)
    return None


def soak_entry(soak: Row | None, target: str) -> Row | None:
    for entry in (soak or {}).get("soak", []):
        if entry["target"] == target:
            return dict(entry)
    return None


Check = Callable[[Row, Row | None, str], tuple[str, bool | None]]


def t_rps(case: str, floor: float, unit: str) -> Check:
    def check(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
        s = find(result, case, target)
        if s is None:
            return "not measured", None
        return f"{num(s['rps'], 0)} {unit}", s["rps"] >= floor

    return check


def t_delta(case: str, key: str, ceiling: float, *, no_errors: bool = False) -> Check:
    def check(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
        s = find(result, case, target)
        if s is None or key not in s:
            return "not measured", None
        text = f"{num(s[key], 3, True)} ms" + (f", {s['errors']} errors" if no_errors else "")
        return text, s[key] <= ceiling and (not no_errors or s["errors"] == 0)

    return check


def t_rss(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
    peaks = [s["rss_peak_mib"] for s in result["summary"] if s["target"] == target]
    if not peaks:
        return "not measured", None
    return f"{max(peaks):.1f} MiB", max(peaks) <= 100


def t_soak(_: Row, soak: Row | None, target: str) -> tuple[str, bool | None]:
    entry = soak_entry(soak, target)
    if entry is None:
        return "not measured (run `python -m bench.run --soak 300`)", None
    low, high = second_half(entry)
    text = (
        f"{entry['rss_first_mib']:.1f} first, {entry['rss_min_mib']:.1f} to "
        f"{entry['rss_max_mib']:.1f} MiB over {entry['seconds']} s (second half {low:.1f} to "
        f"{high:.1f}) at {entry['load']['rate']:.0f} of {entry['rate']:.0f} req/s offered"
    )
    held = entry["load"]["rate"] >= 0.95 * entry["rate"]
    return text, entry["within_10pct"] and entry["seconds"] >= 300 and held


def t_body(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
    small, large = find(result, "json-2msg-c1", target), find(result, "json-50msg-c1", target)
    if small is None or large is None or "d_p50" not in small or "d_p50" not in large:
        return "not measured", None
    text = f"{num(large['d_p50'], 3, True)} vs {num(small['d_p50'], 3, True)} ms"
    return text, large["d_p50"] <= 2 * max(small["d_p50"], 0.0)


def t_of_floor(case: str, fraction: float) -> Check:
    """Throughput at least `fraction` of the floor's in the same case."""

    def check(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
        s = find(result, case, target)
        if s is None or s.get("of_floor") is None:
            return "not measured", None
        return pct(s["of_floor"]) + " of the floor", s["of_floor"] >= fraction

    return check


def t_over_floor(case: str, ceiling: float) -> Check:
    """p50 (a stream's time to first event) at most `ceiling` ms over the floor's."""

    def check(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
        s = find(result, case, target)
        if s is None or "d_p50_floor" not in s:
            return "not measured", None
        return f"{num(s['d_p50_floor'], 3, True)} ms", s["d_p50_floor"] <= ceiling

    return check


def t_event_cpu(case: str, ceiling: float) -> Check:
    """CPU per stream event beyond the floor's at most `ceiling` µs."""

    def check(result: Row, _: Row | None, target: str) -> tuple[str, bool | None]:
        s, floor = find(result, case, target) or {}, find(result, case, FLOOR_ROW) or {}
        own, least = s.get("cpu_us_per_event"), floor.get("cpu_us_per_event")
        if own is None or least is None:
            return "not measured", None
        extra = own - least
        return f"{num(extra, 1, True)} µs", extra <= ceiling

    return check


TARGETS: list[tuple[str, Check]] = [
    ("Stream c=16 ≥ 50% of the floor", t_of_floor("stream-2msg-c16", 0.5)),
    ("Stream c=1 TTFE p50 ≤ floor + 0.15 ms", t_over_floor("stream-2msg-c1", 0.15)),
    ("JSON c=16 ≥ 65% of the floor", t_of_floor("json-2msg-c16", 0.65)),
    ("JSON c=1 p50 ≤ floor + 0.1 ms", t_over_floor("json-2msg-c1", 0.1)),
    ("CPU per stream event ≤ floor's + 20 µs (c=16)", t_event_cpu("stream-2msg-c16", 20.0)),
    ("JSON c=16 ≥ 2,500 req/s", t_rps("json-2msg-c16", 2500, "req/s")),
    ("JSON c=1 Δp50 ≤ 0.4 ms", t_delta("json-2msg-c1", "d_p50", 0.4)),
    ("JSON c=64 Δp99 ≤ 50 ms, zero errors", t_delta("json-2msg-c64", "d_p99", 50, no_errors=True)),
    ("Stream c=1 ΔTTFE p50 ≤ 0.6 ms", t_delta("stream-2msg-c1", "d_p50", 0.6)),
    ("Stream c=16 ≥ 2,000 streams/s", t_rps("stream-2msg-c16", 2000, "streams/s")),
    ("Peak RSS ≤ 100 MiB", t_rss),
    ("RSS flat ±10% over 5 min fixed rate", t_soak),
    ("50-message Δp50 ≤ 2 x 2-message Δp50 (c=1)", t_body),
]


def targets_table(result: Row, soak: Row | None) -> list[str]:
    gateways = gateway_rows(result)
    head = "| Target | " + " | ".join(label(result["meta"], t) for t in gateways) + " |"
    lines = [head, "|---|" + "---|" * len(gateways)]
    for name, check in TARGETS:
        cells = []
        for target in gateways:
            text, ok = check(result, soak, target)
            verdict = {True: "**meets**", False: "**misses**", None: ""}[ok]
            cells.append(f"{text} {verdict}".strip())
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def case_name(entry: Row) -> str:
    return CASE_NAMES.get(entry["case"].rsplit("-c", 1)[0], entry["case"])


def within(entry: Row, budget: Budget) -> bool:
    """Whether a limited row's case is within its budget (what a c=1 case is held to)."""
    change = entry.get("rps_change_pct")
    return (
        change is not None and change >= -budget.rps_pct and entry["d_p50_static"] <= budget.p50_ms
    )


def cost_cells(entry: Row) -> str:
    """A limited row's throughput change and p50 change against the static-key row."""
    return f"{num(entry.get('rps_change_pct'), 1, True)}%, {num(entry['d_p50_static'], 3, True)} ms"


def limits_cost_table(result: Row) -> list[str]:
    """Every case: the static-key row, then each limited row with its cost against it."""
    meta, limited = result["meta"], limited_rows(result)
    lines = [
        "| Case | c | Row | req/s | Δ req/s | p50 ms | Δp50 ms | p99 ms | Δp99 ms | CPU µs/req "
        "| ΔCPU µs/req | Redis CPU µs/req | Errors |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in result["summary"]:
        if s["target"] not in (STATIC_ROW, *limited):
            continue
        cost = cost_of(s, STATIC_ROW)
        change = f"{num(cost['rps_change_pct'], 1, True)}%" if cost else "-"
        lines.append(
            f"| {case_name(s)} | {s['concurrency']} | {label(meta, s['target'])} "
            f"| {num(s['rps'], 0)} | {change} | {num(s['p50'], 3)} "
            f"| {num(cost.get('d_p50_static'), 3, True)} | {num(s['p99'], 3)} "
            f"| {num(cost.get('d_p99_static'), 3, True)} | {num(s.get('cpu_us_per_req'), 0)} "
            f"| {num(cost.get('d_cpu_us_static'), 0, True)} "
            f"| {num(s.get('redis_cpu_us_per_req'), 0)} | {s['errors']} |"
        )
    return lines


def limits_budget_table(result: Row) -> list[str]:
    """The budgets, case by case at concurrency 1."""
    meta, limited = result["meta"], limited_rows(result)
    lines = [
        f"| At c=1, against {label(meta, STATIC_ROW)} | "
        + " | ".join(label(meta, t) for t in limited)
        + " |",
        "|---|" + "---|" * len(limited),
        "| Budget | " + " | ".join(str(BUDGETS[t]) for t in limited) + " |",
    ]
    for s in result["summary"]:
        if s["target"] != STATIC_ROW or s["concurrency"] != 1:
            continue
        cells = []
        for target in limited:
            entry = find(result, s["case"], target)
            if entry is None or "d_p50_static" not in entry:
                cells.append("not measured")
                continue
            verdict = "**meets**" if within(entry, BUDGETS[target]) else "**misses**"
            cells.append(f"{cost_cells(entry)}: {verdict}")
        name = case_name(s) + (" (TTFE p50)" if s["kind"] == "stream" else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    timing = meta.get("server_timing") or {}
    base = (timing.get(STATIC_ROW) or {}).get("gw_ms")
    if base is not None:
        cells = [
            num((timing.get(t) or {}).get("gw_ms", base) - base, 3, True) + " ms" for t in limited
        ]
        lines.append(
            "| Server-Timing `gw` (sequential JSON, no verdict) | " + " | ".join(cells) + " |"
        )
    return lines


def limits_section(result: Row) -> list[str]:
    """The keys-and-limits rows: what each costs against the static-key row, and its budget."""
    meta = result["meta"]
    limits = meta.get("virtual_key_limits") or {}
    setting = ", ".join(f"`{k}` {v:,}" for k, v in limits.items())
    prefix = meta.get("redis_prefix")
    where = f"in memory or in Redis (prefix `{prefix}`, deleted after the run)" if prefix else ""
    return [
        f"Keys and limits: {label(meta, STATIC_ROW)} is called with a static key (no limits); "
        f"the rows below are the same gateway called with a virtual key with every limit set "
        f"({setting}: counted, never refused), counted {where or 'in memory'}. Δ = limited row "
        "- static-key row, same run; for streams p50 is the time to first event and req/s is "
        "streams/s; Redis CPU is the Redis server's, per request (the gateway's own CPU is "
        "apart from it).",
        "",
        *limits_cost_table(result),
        "",
        "Budgets (c=1, throughput change and p50 change against the static-key row):",
        "",
        *limits_budget_table(result),
        "",
    ]


def run_line(result: Row) -> str:
    """How the run was made, in one line."""
    meta = result["meta"]
    cfg, box = meta["config"], meta["machine"]
    return (
        f"Run of {meta['date']} at commit {meta['commit']}: {cfg['reps']} repetition(s) of "
        f"{cfg['duration']} s after {cfg['warmup']} s of warm-up, medians; "
        f"{box['nproc']} cores ({box['cpu']}), Python {box['python']}, route `{cfg['route']}`, "
        f"{cfg['workers']} gateway worker(s)."
    )


# Usage ledger, metrics and tracing ------------------------------------------------------------


def observed_rows(result: Row) -> list[str]:
    """The rows with the ledger and metrics (and tracing) that have a bare row to compare with."""
    return [t for t in OBSERVED if has_base(result, t, BARE_ROW)]


def observed_verdict(entry: Row | None) -> tuple[str, bool | None]:
    """A row's throughput change against the bare row, and whether it is within the budget."""
    change = cost_of(entry or {}, BARE_ROW).get("rps_change_pct")
    if change is None:
        return "not measured", None
    return f"{num(change, 1, True)}%{rep_spread(entry or {})}", change >= -OBSERVED_BUDGET_PCT


def rep_spread(entry: Row) -> str:
    """The change in each repetition against the base row measured in the same repetition
    (bench/run.py `paired_changes`), as ` (N reps: a to b%)`; empty with fewer than two."""
    changes = entry.get("rps_change_reps") or []
    if len(changes) < 2:
        return ""
    low, high = num(min(changes), 1, True), num(max(changes), 1, True)
    return f" ({len(changes)} reps: {low} to {high}%)"


def observed_case_table(result: Row, bare: Row) -> list[str]:
    """One case: the bare row, then each observed row with its cost against it."""
    lines = [
        "| Row | req/s | Δ req/s vs bare | p50 ms | Δp50 ms | CPU µs/req | ΔCPU µs/req | Errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    entries = [bare, *(find(result, bare["case"], t) for t in observed_rows(result))]
    for s in entries:
        if s is None:
            continue
        cost = cost_of(s, BARE_ROW)
        change = f"{num(cost['rps_change_pct'], 1, True)}%" if cost else "-"
        lines.append(
            f"| {label(result['meta'], s['target'])} | {num(s['rps'], 0)} | {change} "
            f"| {num(s['p50'], 3)} | {num(cost.get('d_p50_static'), 3, True)} "
            f"| {num(s.get('cpu_us_per_req'), 0)} | {num(cost.get('d_cpu_us_static'), 0, True)} "
            f"| {s['errors']} |"
        )
    return lines


def observed_verdict_line(result: Row, case: str) -> str:
    """Each observed row's throughput change in one case, against the budget."""
    parts = []
    for target in observed_rows(result):
        text, ok = observed_verdict(find(result, case, target))
        verdict = {True: ": **meets**", False: ": **misses**", None: ""}[ok]
        parts.append(f"{OBSERVED[target]} {text}{verdict}")
    budget = f"Budget (throughput ≥ -{OBSERVED_BUDGET_PCT:g}% against the bare row): "
    return budget + "; ".join(parts) + "."


def observed_tally(result: Row, bares: list[Row]) -> str:
    """In how many cases each observed row is within the budget."""
    parts = []
    for target in observed_rows(result):
        held = sum(observed_verdict(find(result, b["case"], target))[1] is True for b in bares)
        parts.append(f"{OBSERVED[target]} in {held} of {len(bares)} cases")
    return "Within the budget: " + ", ".join(parts) + "."


def ledger_cell(ledger: Row) -> str:
    """A row's ledger table rows and what its journal still held."""
    rows, left = ledger.get("ledger_rows"), ledger.get("journal_bytes")
    text = "no ledger table" if rows is None else f"{num(rows, 0)} rows"
    return text + (
        ", no journal" if left is None else f", {num(left, 0)} bytes left in its journal"
    )


def observed_proof(result: Row) -> list[str]:
    """What shows the ledger and tracing were on (or off): rows stored, spans received."""
    meta, lines = result["meta"], []
    ledger = meta.get("ledger") or {}
    rows = [t for t in (BARE_ROW, *OBSERVED) if t in ledger]
    if rows:
        cells = [f"{t} {ledger_cell(ledger[t])}" for t in rows]
        lines.append(
            "Usage ledger once the gateways stopped (`usage_ledger` in each row's SQLite "
            "file): " + "; ".join(cells) + "."
        )
    sink = meta.get("otlp_sink")
    if sink:
        answered = sum(
            r.get("log_requests", 0)
            for r in result["measurements"]
            if r["target"] in ("native-traced", "native-traced-10pct")
        )
        lines.append(
            f"The OTLP sink received {num(sink['batches'], 0)} batches, {num(sink['spans'], 0)} "
            f"spans and {num(sink['bytes'] / 1e6, 2)} MB from the traced rows "
            f"({sink['rejected']} rejected; the sink's own CPU {sink['cpu_s']} s), which logged "
            f"{num(answered, 0)} requests in the measured windows (warm-ups and checks add more)."
        )
    elif "native-traced" in (meta.get("row_settings") or {}):
        lines.append("The OTLP sink left no counts: whether spans arrived is not known.")
    return lines


def observability_section(result: Row) -> list[str]:
    """The ledger, metrics and tracing: each observed row's cost against the bare row, case by
    case, with its verdict against the budget."""
    meta = result["meta"]
    settings = meta.get("row_settings") or {}
    described = "; ".join(
        f"{name}: " + ", ".join(f"`{k}={v}`" for k, v in env.items())
        for name, env in settings.items()
        if name in (BARE_ROW, *OBSERVED)
    )
    bares = [s for s in result["summary"] if s["target"] == BARE_ROW]
    lines = [
        "Usage ledger, metrics and tracing: the native gateway with its usage ledger and "
        "metrics off (native-bare), with both on (native, the defaults) and with traces "
        "exported over OTLP/HTTP to a local sink as well (native-traced, every request "
        "sampled; native-traced-10pct, one in ten; the SDK's batch "
        f"defaults: {BSP_DEFAULTS}). Settings: {described or 'none recorded'}. Δ = row - "
        "bare row, same run; for streams p50 is the time to first event and req/s is "
        f"streams/s. Budget: together they cost at most {OBSERVED_BUDGET_PCT:g}% of "
        "throughput.",
        "",
    ]
    for bare in bares:
        title = f"**{case_name(bare)}, c={bare['concurrency']}**"
        lines += [title, "", *observed_case_table(result, bare), ""]
        lines += [observed_verdict_line(result, bare["case"]), ""]
    lines.append(observed_tally(result, bares))
    for proof in observed_proof(result):
        lines += ["", proof]
    return [*lines, ""]


def observability_markdown(result: Row) -> str:
    """The ledger, metrics and tracing section on its own (`observability.md`)."""
    return "\n".join([run_line(result), "", *observability_section(result)]) + "\n"


def markdown(result: Row, soak: Row | None = None) -> str:
    """The run's tables: JSON, streams, targets, and how the run was made."""
    meta = result["meta"]
    rows = result["measurements"]
    other = max((r["foreign_cores"] for r in rows), default=0.0)
    lines = [
        run_line(result),
        "",
        "Non-streaming (wrk; latency from request sent to response read):",
        "",
        *json_table(result),
        "",
        "Streaming (bench.stream_client; TTFE = request sent to first SSE event; "
        "stream = request sent to `[DONE]`):",
        "",
        *stream_table(result),
        "",
        *(observability_section(result) if observed_rows(result) else []),
        *(limits_section(result) if limited_rows(result) else []),
        "Targets:",
        "",
        *targets_table(result, soak),
        "",
        f"Other processes on the machine used at most {other:.2f} cores during a measurement.",
    ]
    timing = {k: v for k, v in (meta.get("server_timing") or {}).items() if v}
    for name, figures in timing.items():
        lines.append(
            f"Server-Timing of {label(meta, name)} (sequential JSON requests, medians): "
            f"gw {figures.get('gw_ms')} ms (the gateway's own time to the response head), "
            f"upstream {figures.get('upstream_ms')} ms (its upstream call, as it times it)"
            + (
                f", ttfb {figures['ttfb_ms']} ms (from the request's first byte read to the "
                "response head)."
                if "ttfb_ms" in figures
                else "."
            )
        )
    for name, reason in (meta.get("skipped") or {}).items():
        lines.append(f"Row {name} was left out: {reason}.")
    if not meta.get("transport_setting_known"):
        lines.append(
            "† This gateway does not read `CEREBRAS_CLIENT` yet: every gateway row ran the "
            "transport it has (the Cerebras SDK)."
        )
    return "\n".join(lines) + "\n"


def second_half(entry: Row) -> tuple[float, float]:
    """RSS min and max over the second half of a soak's samples (after any warm-up growth)."""
    values = [rss for _, rss in entry["rss_samples_mib"]]
    half = values[len(values) // 2 :] or values
    return min(half), max(half)


def soak_markdown(result: Row) -> str:
    meta = result["meta"]
    entries = result["soak"]
    rate = entries[0]["rate"] if entries else 0
    lines = [
        f"Soak of {meta['date']} at commit {meta['commit']}: each gateway offered {rate:.0f} "
        "req/s (open loop; every 4th request a stream; at most 256 in flight, requests due "
        "beyond that are skipped) after a 5 s warm-up; its RSS (VmRSS) sampled every 5 s. "
        "Within ±10% means every sample is within ±10% of the first.",
        "",
        "| Row | Seconds | Offered req/s | Achieved req/s | Errors | Skipped | p50 ms | p99 ms "
        "| RSS first MiB | RSS min MiB | RSS max MiB | RSS last MiB | 2nd half min-max MiB "
        "| Within ±10% |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for e in entries:
        load = e["load"]
        low, high = second_half(e)
        lines.append(
            f"| gateway {e['target']} | {e['seconds']} | {e['rate']:.0f} | {load['rate']:.0f} "
            f"| {load['errors']} | {load['skipped']} | {load['latency_ms']['p50']} "
            f"| {load['latency_ms']['p99']} | {e['rss_first_mib']} | {e['rss_min_mib']} "
            f"| {e['rss_max_mib']} | {e['rss_last_mib']} | {low}-{high} "
            f"| {'yes' if e['within_10pct'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def chart(result: Row, path: Path) -> None:
    """p50 latency (and stream TTFE p50) against concurrency, direct vs each gateway row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("json-2msg", "Non-streaming p50 latency"), ("stream-2msg", "Streaming TTFE p50"))
    for ax, (prefix, title) in zip(axes, panels, strict=True):
        targets = dict.fromkeys(s["target"] for s in result["summary"])
        for target in targets:
            points = sorted(
                (s["concurrency"], s["p50"])
                for s in result["summary"]
                if s["target"] == target and s["case"].startswith(prefix + "-c")
            )
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style = "k--o" if target == "direct" else "-o"
            ax.plot(xs, ys, style, label=label(result["meta"], target))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        concurrency = sorted({s["concurrency"] for s in result["summary"]})
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("milliseconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    meta = result["meta"]
    fig.suptitle(f"ai_gateway benchmark, {meta['date'][:10]}, {meta['machine']['nproc']} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def limits_chart(result: Row, path: Path) -> None:
    """Each limited row against the static-key row, case by case: throughput change, p50 change
    at c=1 (where the budgets apply, drawn dashed) and CPU per request change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limited = limited_rows(result)
    every = list(dict.fromkeys(s["case"] for s in result["summary"] if s["target"] in limited))
    at_one = [case for case in every if case.endswith("-c1")]
    panels = (
        ("rps_change_pct", "throughput change, %", every, "rps_pct", -1.0),
        ("d_p50_static", "p50 change at c=1, ms (streams: TTFE)", at_one, "p50_ms", 1.0),
        ("d_cpu_us_static", "gateway CPU change, µs per request", every, None, 0.0),
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    width = 0.8 / max(len(limited), 1)
    for ax, (key, title, cases, budget_key, sign) in zip(axes, panels, strict=True):
        for index, target in enumerate(limited):
            values = [(find(result, case, target) or {}).get(key) or 0.0 for case in cases]
            xs = [i + (index - (len(limited) - 1) / 2) * width for i in range(len(cases))]
            bars = ax.bar(xs, values, width, label=label(result["meta"], target))
            if budget_key is not None:
                budget = sign * getattr(BUDGETS[target], budget_key)
                ax.axhline(budget, color=bars.patches[0].get_facecolor(), linestyle="--", lw=1)
        ax.axhline(0, color="black", lw=0.8)
        names = [
            f"{CASE_NAMES.get(c.rsplit('-c', 1)[0], c)}\nc={c.rsplit('-c', 1)[1]}" for c in cases
        ]
        ax.set_xticks(range(len(cases)), names, fontsize=8)
        ax.set_title(title + ("\n(dashed: budget at c=1)" if budget_key else ""), fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=len(labels), fontsize=9)
    meta = result["meta"]
    fig.suptitle(
        f"ai_gateway: virtual key with limits vs static key, same run, {meta['date'][:10]}, "
        f"{meta['machine']['nproc']} cores"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def observability_chart(result: Row, path: Path) -> None:
    """Each observed row against the bare row, case by case: throughput change (the budget
    drawn dashed) and CPU per request change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    observed = observed_rows(result)
    cases = [s["case"] for s in result["summary"] if s["target"] == BARE_ROW]
    panels = (
        ("rps_change_pct", f"throughput change, % (dashed: budget -{OBSERVED_BUDGET_PCT:g}%)"),
        ("d_cpu_us_static", "gateway CPU change, µs per request"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    width = 0.8 / max(len(observed), 1)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for index, target in enumerate(observed):
            values = [cost_of(find(result, c, target) or {}, BARE_ROW).get(key) for c in cases]
            xs = [i + (index - (len(observed) - 1) / 2) * width for i in range(len(cases))]
            ax.bar(xs, [v or 0.0 for v in values], width, label=OBSERVED[target])
        if key == "rps_change_pct":
            ax.axhline(-OBSERVED_BUDGET_PCT, color="red", linestyle="--", lw=1)
        ax.axhline(0, color="black", lw=0.8)
        names = [
            f"{CASE_NAMES.get(c.rsplit('-c', 1)[0], c)}\nc={c.rsplit('-c', 1)[1]}" for c in cases
        ]
        ax.set_xticks(range(len(cases)), names, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=max(len(labels), 1), fontsize=9)
    meta = result["meta"]
    fig.suptitle(
        f"ai_gateway: usage ledger, metrics and tracing vs none, same run, {meta['date'][:10]}, "
        f"{meta['machine']['nproc']} cores"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Reports of a run: progress lines, the Markdown tables, the targets and the chart."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def progress_line(row: Row) -> str:
    """One measured repetition, as printed while the run goes."""
    unit = "streams/s" if row["kind"] == "stream" else "req/s"
    text = (
        f"{row['case']:<20} {row['target']:<7} rep {row['rep'] + 1}: {row['rps']:>9.1f} {unit}"
        f"  p50 {row['p50']:.3f}  p99 {row['p99']:.3f} ms  errors {row['errors']}"
        f"  cpu {row['cpu_us_per_req']:.0f} µs/req  other-cpu {row['foreign_cores']:.2f}"
    )
    if "rss_peak_mib" in row:
        text += f"  peak {row['rss_peak_mib']} MiB"
    return text


def num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"


def label(meta: Row, target: str) -> str:
    """The row's name; a transport the gateway does not read yet is marked."""
    if target == "direct":
        return "direct (limit)"
    known = meta.get("transport_setting_known")
    return f"gateway {target}" + ("" if known else " †")


def json_table(result: Row) -> list[str]:
    lines = [
        "| Body | c | Row | req/s | p50 ms | p90 ms | p99 ms | Δp50 ms | Δp99 ms | Errors "
        "| CPU µs/req | Peak RSS MiB |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in result["summary"]:
        if s["kind"] != "json":
            continue
        lines.append(
            f"| {s['body']} msg | {s['concurrency']} | {label(result['meta'], s['target'])} "
            f"| {num(s['rps'], 0)} | {num(s['p50'], 3)} | {num(s['p90'], 3)} | {num(s['p99'], 3)} "
            f"| {num(s.get('d_p50'), 3, True)} | {num(s.get('d_p99'), 3, True)} | {s['errors']} "
            f"| {num(s.get('cpu_us_per_req'), 0)} | {num(s.get('rss_peak_mib'), 1)} |"
        )
    return lines


def stream_table(result: Row) -> list[str]:
    lines = [
        "| c | Row | streams/s | TTFE p50 ms | TTFE p90 ms | TTFE p99 ms | ΔTTFE p50 ms "
        "| stream p50 ms | Errors | CPU µs/stream | Peak RSS MiB |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in result["summary"]:
        if s["kind"] != "stream":
            continue
        lines.append(
            f"| {s['concurrency']} | {label(result['meta'], s['target'])} | {num(s['rps'], 0)} "
            f"| {num(s['p50'], 3)} | {num(s['p90'], 3)} | {num(s['p99'], 3)} "
            f"| {num(s.get('d_p50'), 3, True)} | {num(s.get('total_p50'), 3)} | {s['errors']} "
            f"| {num(s.get('cpu_us_per_req'), 0)} | {num(s.get('rss_peak_mib'), 1)} |"
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


TARGETS: list[tuple[str, Check]] = [
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
    gateways = list(result["meta"]["config"]["transports"])
    head = "| Target | " + " | ".join(f"gateway {t}" for t in gateways) + " |"
    lines = [head, "|---|" + "---|" * len(gateways)]
    for name, check in TARGETS:
        cells = []
        for target in gateways:
            text, ok = check(result, soak, target)
            verdict = {True: "**meets**", False: "**misses**", None: ""}[ok]
            cells.append(f"{text} {verdict}".strip())
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: Row, soak: Row | None = None) -> str:
    """The run's tables: JSON, streams, targets, and how the run was made."""
    meta = result["meta"]
    cfg, box = meta["config"], meta["machine"]
    rows = result["measurements"]
    other = max((r["foreign_cores"] for r in rows), default=0.0)
    lines = [
        f"Run of {meta['date']} at commit {meta['commit']}: {cfg['reps']} repetition(s) of "
        f"{cfg['duration']} s after {cfg['warmup']} s of warm-up, medians; "
        f"{box['nproc']} cores ({box['cpu']}), Python {box['python']}, route `{cfg['route']}`, "
        f"{cfg['workers']} gateway worker(s).",
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
        "Targets:",
        "",
        *targets_table(result, soak),
        "",
        f"Other processes on the machine used at most {other:.2f} cores during a measurement.",
    ]
    timing = {k: v for k, v in (meta.get("server_timing") or {}).items() if v}
    for name, figures in timing.items():
        lines.append(
            f"Server-Timing of gateway {name} (sequential JSON requests, medians): "
            f"gw {figures.get('gw_ms')} ms (the gateway's own time to the response head), "
            f"upstream {figures.get('upstream_ms')} ms (its upstream call, as it times it)."
        )
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

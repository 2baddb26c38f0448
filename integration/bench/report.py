"""Turns the raw runs of `make bench` into medians, ratios and Markdown tables, and writes
them into BENCHMARKS.md between two markers (everything else in that file is hand-written
analysis and stays as it is)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN make bench results (generated: do not edit by hand) -->"
END = "<!-- END make bench results -->"
SIDES = ("plain", "noop", "filter")

# The targets, on ratios and differences of the same run.
TARGET_RATIO = 0.8
TARGET_ADDED_P50_US = 300
TARGET_TTFB_ADDED_US = 1000


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


def _runs(results: dict[str, Any], scenario: str, kind: str) -> dict[int, dict[str, dict[str, Any]]]:
    """round -> side -> run."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for run in results["runs"]:
        if run["scenario"] == scenario and run["kind"] == kind:
            out.setdefault(run["round"], {})[run["side"]] = run
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for name in results["scenarios"]:
        thr = _runs(results, name, "throughput")
        lat = _runs(results, name, "latency")
        s: dict[str, Any] = {"rps": {}, "ratio": {}, "cpu_us": {}, "p50_us": {}, "p99_us": {}, "added_p50_us": {}, "added_p99_us": {}}
        for side in SIDES:
            rounds = [r for r in thr.values() if side in r and "plain" in r]
            s["rps"][side] = _median([r[side]["rps"] for r in rounds])
            ratios = [r[side]["rps"] / r["plain"]["rps"] for r in rounds if r["plain"]["rps"]]
            s["ratio"][side] = (_median(ratios), min(ratios, default=float("nan")), max(ratios, default=float("nan")))
            s["cpu_us"][side] = _median([r[side]["cpu_s"] * 1e6 / r[side]["requests"] for r in rounds if r[side]["requests"]])
            lrounds = [r for r in lat.values() if side in r and "plain" in r]
            s["p50_us"][side] = _median([r[side]["p50_us"] for r in lrounds])
            s["p99_us"][side] = _median([r[side]["p99_us"] for r in lrounds])
            s["added_p50_us"][side] = _median([r[side]["p50_us"] - r["plain"]["p50_us"] for r in lrounds])
            s["added_p99_us"][side] = _median([r[side]["p99_us"] - r["plain"]["p99_us"] for r in lrounds])
        s["errors"] = sum(sum(run["errors"].values()) for run in results["runs"] if run["scenario"] == name)
        scenarios[name] = s

    ttfb: dict[str, Any] = {}
    if results.get("ttfb"):
        gap_us = results["ttfb"]["gap_ms"] * 1000
        samples = results["ttfb"]["samples"]
        for side, values in samples.items():
            first = [v[0] for v in values]
            ttfb[side] = {
                "median_us": _median(first),
                "p99_us": _percentile(first, 99),
                "max_us": max(first),
                "stalled": sum(1 for v in first if v >= gap_us),
                "samples": len(first),
            }
        if "plain" in ttfb:
            for side in ttfb:
                ttfb[side]["added_median_us"] = ttfb[side]["median_us"] - ttfb["plain"]["median_us"]
                ttfb[side]["added_p99_us"] = ttfb[side]["p99_us"] - ttfb["plain"]["p99_us"]

    targets = []
    for name in ("1 KB", "32 KB"):
        if name in scenarios:
            ratio = scenarios[name]["ratio"]["filter"][0]
            targets.append((f"throughput filter/plain at {name} >= {TARGET_RATIO}", f"{ratio:.2f}", ratio >= TARGET_RATIO))
    if "32 KB" in scenarios:
        added = scenarios["32 KB"]["added_p50_us"]["filter"]
        targets.append((f"added p50 at 32 KB < {TARGET_ADDED_P50_US} µs", f"{added:.0f} µs", added < TARGET_ADDED_P50_US))
    if "filter" in ttfb and "added_median_us" in ttfb["filter"]:
        added = ttfb["filter"]["added_median_us"]
        targets.append(("stream time to first byte added < 1 ms (median)", f"{added:.0f} µs", added < TARGET_TTFB_ADDED_US))
        stalled = ttfb["filter"]["stalled"]
        targets.append(("streams: no stall", f"{stalled} of {ttfb['filter']['samples']} held back", stalled == 0))
    return {"scenarios": scenarios, "ttfb": ttfb, "targets": targets}


def _f(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def _signed(value: float) -> str:
    if value != value:
        return "n/a"
    return f"{value:+,.0f}"


def markdown(results: dict[str, Any], summary: dict[str, Any]) -> str:
    m = results["machine"]
    st = results["settings"]
    lines = [
        f"Measured {results['date']} with `{results['command']}` ({results['elapsed_s']} s).",
        "",
        f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM, Linux {m['kernel']}; "
        f"load average {m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end.",
        f"- Envoy {m['envoy']}, concurrency 1; {m['wrk']}; {results['placement']}.",
        f"- Filter: commit {m['commit']}, {m['filter_wasm_bytes']:,} bytes of Wasm; plugin config `{results['route']}` "
        f"(guards {'on' if results['guards'] else 'OFF'}).",
        f"- {st['rounds']} round(s); per round and side a {st['throughput_s']} s throughput run with "
        f"{st['connections']} connections and a {st['latency_s']} s latency run with 1 connection; "
        "the side order rotates every round.",
    ]
    for note in results.get("notes", []):
        lines.append(f"- **Note:** {note}")
    for problem in results.get("check", {}).get("problems", []):
        lines.append(f"- **Problem:** {problem}")
    sc = summary["scenarios"]
    lines += [
        "",
        f"**Throughput** ({st['connections']} connections; requests/s, median of rounds; ratio = side/plain within a round, median [min–max])",
        "",
        "| prompt | plain | noop Wasm | noop/plain | aigate | aigate/plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in sc.items():
        n, f = s["ratio"]["noop"], s["ratio"]["filter"]
        lines.append(
            f"| {name} | {_f(s['rps']['plain'])} | {_f(s['rps']['noop'])} | {n[0]:.2f} [{n[1]:.2f}–{n[2]:.2f}] "
            f"| {_f(s['rps']['filter'])} | **{f[0]:.2f}** [{f[1]:.2f}–{f[2]:.2f}] |"
        )
    lines += [
        "",
        "**Latency** (1 connection, nothing queues; µs; added = side − plain within a round, median of rounds)",
        "",
        "| prompt | plain p50 | plain p99 | noop +p50 | noop +p99 | aigate +p50 | aigate +p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in sc.items():
        lines.append(
            f"| {name} | {_f(s['p50_us']['plain'])} | {_f(s['p99_us']['plain'])} "
            f"| {_signed(s['added_p50_us']['noop'])} | {_signed(s['added_p99_us']['noop'])} "
            f"| **{_signed(s['added_p50_us']['filter'])}** | {_signed(s['added_p99_us']['filter'])} |"
        )
    lines += [
        "",
        "**Envoy CPU per request** (utime+stime of the Envoy process over the throughput runs ÷ requests; µs)",
        "",
        "| prompt | plain | noop Wasm | aigate | aigate − plain |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in sc.items():
        c = s["cpu_us"]
        lines.append(f"| {name} | {_f(c['plain'])} | {_f(c['noop'])} | {_f(c['filter'])} | {_signed(c['filter'] - c['plain'])} |")
    tt = summary["ttfb"]
    if tt:
        gap = results["ttfb"]["gap_ms"]
        lines += [
            "",
            f"**Streams: time to first event** (200-event answers, {tt['plain']['samples']} per side, the upstream pauses "
            f"{gap} ms after the first event, so a held-back stream shows as ≥ {gap} ms; µs from the request's first byte)",
            "",
            "| side | median | p99 | added median | added p99 | held back |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for side in SIDES:
            if side in tt:
                t = tt[side]
                lines.append(
                    f"| {side} | {_f(t['median_us'])} | {_f(t['p99_us'])} | {_signed(t.get('added_median_us', float('nan')))} "
                    f"| {_signed(t.get('added_p99_us', float('nan')))} | {t['stalled']} |"
                )
    mem = results.get("memory") or {}
    if mem:
        lines += [
            "",
            "**Memory** (one Envoy per side, concurrency 1; RSS in MiB; load = 32 KB then 1 MB prompts)",
            "",
            "| side | idle | after load | peak |",
            "|---|---:|---:|---:|",
        ]
        for side in SIDES:
            if side in mem:
                x = mem[side]
                lines.append(
                    f"| {side} | {x['idle_rss_kib'] / 1024:.1f} | {x['loaded_rss_kib'] / 1024:.1f} | {x['peak_rss_kib'] / 1024:.1f} |"
                )
    lines += profile_lines(results.get("profile") or {})
    if summary["targets"]:
        lines += ["", "**Targets**", "", "| target | measured | met |", "|---|---:|:---:|"]
        for what, measured, met in summary["targets"]:
            lines.append(f"| {what} | {measured} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def profile_lines(prof: dict[str, Any]) -> list[str]:
    """The "where the time goes" table of the phase-profile pass."""
    if not prof:
        return []
    lines = [
        "",
        "**Where the time goes** (aigate built with `--features phase-profile`, alone in an Envoy; "
        "time inside the VM per request, µs, host calls included; the profiling's own clock reads are subtracted)",
        "",
        "| prompt | in VM | request headers | request body | response headers | response body | host calls | in host calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in prof.items():
        ph = p["phases"]
        calls = sum(h["per_request"] for h in p["host"].values())
        host_us = sum(h["per_request"] * h["us_per_call"] for h in p["host"].values())

        def us(phase: str) -> str:
            return _f(ph.get(phase, {}).get("us", float("nan")), 1)

        lines.append(
            f"| {name} | {_f(p['total_us'], 1)} | {us('request_headers')} | {us('request_body')} "
            f"| {us('response_headers')} | {us('response_body')} | {calls:.1f} | {host_us:.1f} |"
        )
    first = next(iter(prof.values()))
    calls = sorted(first["host"].items(), key=lambda kv: -kv[1]["per_request"] * kv[1]["us_per_call"])
    lines += [
        "",
        f"Host calls of one {next(iter(prof))} request (µs per call × calls): "
        + ", ".join(f"{name} {h['us_per_call']:.2f} × {h['per_request']:.0f}" for name, h in calls)
        + ".",
    ]
    return lines


def update_benchmarks_md(path: Path, generated: str) -> None:
    block = f"{BEGIN}\n{generated}{END}"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + block + tail)
            return
        path.write_text(text.rstrip() + "\n\n## Results\n\n" + block + "\n")
        return
    path.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")

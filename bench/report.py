"""Results: run metadata, ratios, JSON files and the Markdown table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.burst import markdown as burst_line
from bench.scaling import markdown as scaling_table
from bench.servers import REPO_ROOT, default_worker_count, serve_supports_workers

if TYPE_CHECKING:
    from bench.harness import BenchConfig

DASH = "—"


def run_info(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """What was run, where, with what."""
    overrides = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("CIOLAKE_") and "KEY" not in name
    }
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if config.quick else "full",
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "wrk": _wrk_version(),
        "git": _git_state(),
        "workers_flag": config.workers,
        "serve_supports_workers": serve_supports_workers(),
        "worker_count": default_worker_count(config.workers),
        "connections": config.connections,
        "rate_connections": config.rate_connections,
        "wrk_threads": config.threads,
        "phase_s": config.phase_s,
        "marker_rate_per_s": config.marker_rate,
        "rate_basis": config.rate_basis,
        "load_average_before": _load_average(),
        "ciolake_env_overrides": overrides,
        "timestamps": "each phase's requests are signed just before it, with the default "
        "300 s tolerance; the 1,000,000-event check runs with CIOLAKE_TIMESTAMP_TOLERANCE_S="
        "86400",
        "workdir": str(workdir),
    }


def run_end_info(elapsed_s: float) -> dict[str, Any]:
    return {"elapsed_s": round(elapsed_s, 1), "load_average_after": _load_average()}


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """ciolake's throughput and CPU cost relative to the ceiling and the floor."""

    def saturation(system: str, figure: str) -> float | None:
        phase = results.get(system, {}).get("phases", {}).get("saturation")
        value = phase.get(figure) if phase else None
        return float(value) if value else None

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return round(numerator / denominator, 4) if numerator and denominator else None

    ours = saturation("ciolake", "events_per_s")
    our_cpu = saturation("ciolake", "cpu_s_per_1000_events")
    return {
        "throughput_ciolake_over_ceiling": ratio(ours, saturation("ceiling", "events_per_s")),
        "throughput_ciolake_over_floor": ratio(ours, saturation("floor", "events_per_s")),
        "cpu_per_event_ciolake_over_ceiling": ratio(
            our_cpu, saturation("ceiling", "cpu_s_per_1000_events")
        ),
        "cpu_per_event_ciolake_over_floor": ratio(
            our_cpu, saturation("floor", "cpu_s_per_1000_events")
        ),
    }


def write(results: dict[str, Any], results_dir: Path) -> list[Path]:
    """``<timestamp>.json``, ``latest.json`` and ``latest.md`` under ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    paths = [results_dir / f"{stamp}.json", results_dir / "latest.json"]
    for path in paths:
        path.write_text(text)
    markdown_path = results_dir / "latest.md"
    markdown_path.write_text(markdown(results) + "\n")
    return [*paths, markdown_path]


def markdown(results: dict[str, Any]) -> str:
    """The results as the README's Performance table, with the run's conditions under it."""
    systems = ("ciolake", "ceiling", "floor")
    header = [
        "| figure | ciolake | ceiling (bare 200) | floor (`write_deltalake` per event) |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        _row("events/s at saturation", results, systems, _saturation_rate),
        _row("events/s committed at saturation (phase + drain)", results, systems, _committed),
        _row("latency p50 / p95 / p99 at 50 % load (ms)", results, systems, _latency("rate_50")),
        _row("latency p50 / p95 / p99 at 90 % load (ms)", results, systems, _latency("rate_90")),
        _row("freshness p50 / p99 at 50 % load (s)", results, systems, _freshness("rate_50")),
        _row("freshness p50 / p99 at 90 % load (s)", results, systems, _freshness("rate_90")),
        _row("CPU s per 1,000 events (saturation)", results, systems, _cpu),
        _row("peak RSS / PSS, all processes (MiB)", results, systems, _rss),
        _row("peak anonymous memory, all processes (MiB)", results, systems, _anon_cell),
        _row(
            "Delta commits per 100,000 events (sat. / 50 %)", results, systems, _tables("commits")
        ),
        _row("data files per 100,000 events (sat. / 50 %)", results, systems, _tables("files")),
        _ratio_row(results),
    ]
    scaling = scaling_table(results.get("scaling") or {})
    by_workers = ["", "Saturation by worker count (`bench/scaling.py`):", "", *scaling]
    burst = burst_line(results.get("burst") or {})
    tables = [*header, *rows, *(by_workers if scaling else []), *(["", *burst] if burst else [])]
    return "\n".join([_title(results), "", *tables, "", *_notes(results)])


def _title(results: dict[str, Any]) -> str:
    run = results["run"]
    return f"### Benchmark, {run['mode']} mode, {run['started_at']}"


def _row(label: str, results: dict[str, Any], systems: tuple[str, ...], cell: Any) -> str:
    values = [cell(name, results.get(name)) if results.get(name) else DASH for name in systems]
    return f"| {label} | " + " | ".join(values) + " |"


def _phase(system: dict[str, Any], name: str) -> dict[str, Any] | None:
    phase: dict[str, Any] | None = system.get("phases", {}).get(name)
    return phase


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}"


def _saturation_rate(name: str, system: dict[str, Any]) -> str:
    phase = _phase(system, "saturation")
    return _number(phase["events_per_s"]) if phase else DASH


def _committed(name: str, system: dict[str, Any]) -> str:
    # What the committer sustained while the answers outran it: rows in the tables over the
    # phase and the drain after it.
    if name != "ciolake":
        return "n/a"
    phase = _phase(system, "saturation")
    if not phase or not phase.get("tables"):
        return DASH
    return _number(phase["tables"]["raw_rows"] / (phase["duration_s"] + phase["drain_s"]))


def _latency(phase_name: str) -> Any:
    def cell(name: str, system: dict[str, Any]) -> str:
        phase = _phase(system, phase_name)
        if not phase:
            return "not run" if name != "ciolake" else DASH
        latency = phase["latency_ms"]
        if not latency:
            return "no answer in the phase"
        text = " / ".join(_number(latency[p], 1) for p in ("p50", "p95", "p99"))
        return text + (" *" if _omitted(phase) else "")

    return cell


def _omitted(phase: dict[str, Any]) -> bool:
    """Whether coordinated omission may bias the phase's latency (see the notes)."""
    scheduled = phase.get("scheduled") or 0
    short = scheduled and phase["events_sent"] < 0.99 * scheduled
    return bool(phase["late_fraction"] > 0.001 or short)


def _freshness(phase_name: str) -> Any:
    def cell(name: str, system: dict[str, Any]) -> str:
        if name == "ceiling":
            return "n/a"
        if name == "floor":
            return "0 (writes before the 200)"
        phase = _phase(system, phase_name)
        fresh = phase.get("freshness") if phase else None
        if not fresh:
            return DASH
        text = f"{_number(fresh['p50_s'], 2)} / {_number(fresh['p99_s'], 2)}"
        return text + (f" ({fresh['markers_missing']} missing)" if fresh["markers_missing"] else "")

    return cell


def _cpu(name: str, system: dict[str, Any]) -> str:
    phase = _phase(system, "saturation")
    return _number(phase["cpu_s_per_1000_events"], 3) if phase else DASH


def _rss(name: str, system: dict[str, Any]) -> str:
    return f"{_number(system.get('peak_rss_mib'))} / {_number(system.get('peak_pss_mib'))}"


def _anon_cell(name: str, system: dict[str, Any]) -> str:
    return _anon(system)


def _tables(figure: str) -> Any:
    def cell(name: str, system: dict[str, Any]) -> str:
        if name == "ceiling":
            return "n/a"
        values = []
        for phase_name in ("saturation", "rate_50"):
            phase = _phase(system, phase_name)
            tables = phase.get("tables") if phase else None
            values.append(_number(tables.get(f"{figure}_per_100k_events")) if tables else DASH)
        return " / ".join(values)

    return cell


def _ratio_row(results: dict[str, Any]) -> str:
    ratios = results.get("ratios", {})
    ceiling = ratios.get("throughput_ciolake_over_ceiling")
    floor = ratios.get("throughput_ciolake_over_floor")
    ceiling_text = DASH if ceiling is None else f"{ceiling:.2f}"
    floor_text = DASH if floor is None else f"{floor:,.1f}"
    return f"| throughput ratio ciolake / this | 1 | {ceiling_text} | {floor_text} |"


def _notes(results: dict[str, Any]) -> list[str]:
    run = results["run"]
    notes = [
        f"Machine: {run['cpus']} CPUs, {run['platform']}, Python {run['python']}, "
        f"load average before {run['load_average_before']} and after "
        f"{run.get('load_average_after')}.",
        f"Servers: uvicorn, {run['worker_count']} worker process(es) each "
        f"(`--workers` {'given' if run['workers_flag'] else 'not given'}). "
        f"Load: wrk, {run['wrk_threads']} thread(s), {run['connections']} connections at "
        f"saturation, {run['rate_connections']} at fixed rates, {run['phase_s']:.0f} s per "
        "phase."
        + (
            f" ciolake's 50 % and 90 % loads are of {run['rate_basis']:,.0f} events/s"
            " (`--rate-basis`), not of its saturation in this run."
            if run.get("rate_basis")
            else ""
        ),
        _load_generator_note(results),
        _saturation_note(results),
        _late_note(results),
        "Freshness is measured in a phase of its own after each latency phase, at the same "
        "rate and on the same server (`rate_50_freshness`, `rate_90_freshness` in the JSON): "
        "its markers and DuckDB queries would otherwise share the machine with the latency "
        "being measured.",
        _rss_note(results),
        _replay_note(results),
        "`*`: more than 0.1 % of requests left over 1 ms late, or under 99 % of the scheduled "
        "requests went out, because every connection was waiting for an answer: the latency "
        "shown then understates what an open-loop sender would see (coordinated omission).",
    ]
    return [f"- {note}" for note in notes if note]


def _load_generator_note(results: dict[str, Any]) -> str:
    wrk_cpu = harness_cpu = load_s = 0.0
    for name in ("ciolake", "ceiling", "floor"):
        for phase in results.get(name, {}).get("phases", {}).values():
            wrk_cpu += phase["wrk_cpu_s"]
            harness_cpu += phase["harness_cpu_s"]
            load_s += phase["duration_s"]
    if not load_s:
        return ""
    cpus = results["run"]["cpus"] or 1
    saturation = _phase(results.get("ciolake", {}), "saturation")
    share = f"{saturation['wrk_share_of_machine']:.0%}" if saturation else DASH
    return (
        f"Load generator on the same machine: wrk used {wrk_cpu:.1f} CPU-s over {load_s:.0f} s "
        f"of load ({wrk_cpu / (load_s * cpus):.0%} of the machine; {share} during ciolake's "
        f"saturation phase); the harness process during the load (CPU/RSS sampling, freshness "
        f"markers and DuckDB polling) {harness_cpu:.1f} CPU-s."
    )


def _saturation_note(results: dict[str, Any]) -> str:
    answers = []
    for name in ("ciolake", "ceiling", "floor"):
        phase = _phase(results.get(name, {}), "saturation")
        if phase:
            answers.append(f"{name} {phase['non_2xx']:,} of {phase['requests_completed']:,}")
    ours = _phase(results.get("ciolake", {}), "saturation")
    drain = (
        f"ciolake committed its backlog {ours['drain_s']:.1f} s after the load stopped "
        f"(a long drain means the answers outran the committer). "
        if ours
        else ""
    )
    repeats = (
        f" The saturation pool ran out: {ours['repeated_events']:,} requests repeated an event "
        "(duplicates for ciolake; raise --saturation-pool)."
        if ours and ours["repeated_events"]
        else ""
    )
    return f"At saturation: {drain}Non-2xx answers: {', '.join(answers)}.{repeats}"


def _late_note(results: dict[str, Any]) -> str:
    parts = []
    for name in ("rate_50", "rate_90"):
        phase = _phase(results.get("ciolake", {}), name)
        if phase:
            parts.append(
                f"{name.replace('rate_', '')} %: target {phase['target_rate']:,.0f}/s, sent "
                f"{phase['events_sent']:,} of {phase['scheduled']:,} scheduled, answered "
                f"{phase['events_per_s']:,.0f}/s, {phase['late_sends']:,} late sends "
                f"(max {phase['max_lag_ms']:,.0f} ms)"
            )
    return "ciolake fixed-rate phases: " + "; ".join(parts) + "." if parts else ""


def _rss_note(results: dict[str, Any]) -> str:
    check = results.get("rss_check")
    if not check:
        return "1,000,000-event RSS check: not run (quick mode)."
    return (
        f"RSS check, {check['events']:,} unique events at {_target(check)} into a fresh "
        f"ciolake: {check['journaled']:,} events journaled in {check['load_s']:.0f} s "
        f"({check['events_per_s']:,.0f}/s); peak RSS {check['peak_rss_mib']:,.0f} MiB "
        f"(PSS {check['peak_pss_mib']:,.0f} MiB, anonymous {_anon(check)} MiB) over"
        f" {check['processes']} processes, "
        f"{check['rss_after_drain_mib']:,.0f} MiB RSS after the backlog drained."
    )


def _anon(record: dict[str, Any]) -> str:
    # Runs recorded before the figure existed have none.
    return _number(record.get("peak_anon_mib"))


def _target(check: dict[str, Any]) -> str:
    rate = check.get("target_rate")
    return "saturation" if rate is None else f"{rate:,.0f}/s (60 % of saturation)"


def _replay_note(results: dict[str, Any]) -> str:
    replay = results.get("replay")
    if replay is None:
        return "Replay: not run (quick mode; add `--replay`)."
    if replay.get("status") == "ok":
        return (
            f"Replay (`ciolake replay` over the ciolake run's `raw_events`, channel tables "
            f"already complete): {replay['deliveries']:,} deliveries in {replay['elapsed_s']} s, "
            f"{replay['events_per_s']:,.0f} deliveries/s, in {replay.get('processes', 1)} "
            f"processes of {replay.get('peak_rss_mib', 0):,.0f} MiB RSS together "
            f"(PSS {replay.get('peak_pss_mib', 0):,.0f} MiB)."
        )
    reason = replay.get("reason") or f"exit code {replay.get('exit_code')}"
    return f"Replay: {replay.get('status', 'not run')} ({reason})."


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "missing"
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).splitlines()[0] if result.stdout + result.stderr else ""


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}

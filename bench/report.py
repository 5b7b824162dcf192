"""Turning results into the terminal table, a Markdown table and the JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from websockets.version import version as websockets_version

from bench import cluster_scenario
from bench.stats import Measurement, ScenarioResult, TargetCheck

_PRIMARY_RATIO = {
    "s1": ("deliveries_per_s", "dlv/s"),
    "s2": ("p99", "p99"),
    "s3": ("rss_per_connection", "RSS/conn"),
    "s4": ("storm_p99_vs_calm_p99", "storm/calm p99"),
    "s5": ("big_join_vs_ceiling_round_trip", "join/rtt"),
    "s1pg": ("deliveries_per_s", "dlv/s"),
    "metrics": ("cpu_per_delivery_same_load", "CPU on/off"),
    "versus": ("deliveries_per_s", "dlv/s vs baseline"),
    "longrun": ("rss_growth_vs_allowance", "RSS growth/allowance"),
    "s5pg": ("big_join_vs_ceiling_round_trip", "join/rtt"),
    "cluster": ("deliveries_per_s", "dlv/s 2 nodes vs 1"),
}
_COLUMNS = (
    "scenario", "server", "deliv/s", "p50 ms", "p99 ms", "max ms",
    "CPU µs/dlv", "RSS MiB", "dlv/exp", "× ceiling",
)  # fmt: skip


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they mean little without it)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets_version,
    }


def server_version(root: Path) -> dict[str, Any]:
    """The commit of the server under test, and whether its code had local changes.

    The server changes faster than its benchmark numbers: each result file
    says which code it measured.
    """

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "root": str(root),
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "server_code_modified": bool(git("status", "--porcelain", "--", "clubroom_server")),
    }


def targets(results: dict[str, ScenarioResult], quick: bool = False) -> list[TargetCheck]:
    """The issue's targets (issue 17's definitions), checked against whatever scenarios ran.

    A ``--quick`` run is a smoke run: a few hundred milliseconds a step on tiny
    sizes measures nothing about speed, so every timing or size target is shown
    but marked "not judged in --quick"; only "nothing was lost" is judged.
    """
    judged = not quick
    checks: list[TargetCheck] = []
    if (s1 := results.get("s1")) is not None:
        # a climb ended by the load generator or a crowded machine measured the machine
        interfered = s1.details.get("interfered_repetitions", 0)
        sustained_judged, why = judged, "in --quick"
        if judged and interfered:
            sustained_judged = False
            why = (
                f"(in {interfered} of {len(s1.details.get('repetitions', []))} repetitions "
                "the load generator or a crowded machine ended a climb)"
            )
        checks += [
            TargetCheck("S1 sustained deliveries/s ≥ 1.0× ceiling (median)",
                        s1.ratios.get("deliveries_per_s"), 1.0, True, sustained_judged, why),
            TargetCheck("S1 sustained, every repetition ≥ 0.9× ceiling",
                        s1.ratios.get("deliveries_per_s_min"), 0.9, True, sustained_judged, why),
            TargetCheck("S1 CPU/delivery ≤ 1.15× ceiling (common rate, median)",
                        s1.ratios.get("cpu_per_delivery_same_load"), 1.15, False, judged),
        ]  # fmt: skip
    if (s2 := results.get("s2")) is not None:
        checks += [
            TargetCheck("S2 p99 ≤ 100 ms", s2.clubroom.latency.p99_ms, 100.0, False, judged),
            TargetCheck("S2 nothing lost (delivered/expected)", s2.clubroom.delivered_ratio, 1.0,
                        higher_is_better=True),
        ]  # fmt: skip
    if (s3 := results.get("s3")) is not None:
        checks.append(
            TargetCheck("S3 RSS/idle connection ≤ 1.25× ceiling",
                        s3.ratios.get("rss_per_connection"), 1.25, False, judged)
        )  # fmt: skip
    if (s4 := results.get("s4")) is not None:
        checks.append(
            TargetCheck("S4 chat p99 in storm ≤ 2× calm (median)",
                        s4.ratios.get("storm_p99_vs_calm_p99"), 2.0, False, judged)
        )  # fmt: skip
    if (s5 := results.get("s5")) is not None:
        checks.append(
            TargetCheck("S5 join 100k ≤ 1.5× join 1k (p50)", s5.ratios.get("big_vs_small_p50"),
                        1.5, False, judged)
        )  # fmt: skip
    if (metrics := results.get("metrics")) is not None:
        checks.append(
            TargetCheck("metrics on: CPU/delivery ≤ 1.03× off (median)",
                        metrics.ratios.get("cpu_per_delivery_same_load"), 1.03, False, judged)
        )  # fmt: skip
    if (versus := results.get("versus")) is not None:
        checks += [
            TargetCheck("vs baseline: sustained ≥ 0.95× (median)",
                        versus.ratios.get("deliveries_per_s"), 0.95, True, judged),
            TargetCheck("vs baseline: CPU/delivery ≤ 1.05× (median)",
                        versus.ratios.get("cpu_per_delivery_same_load"), 1.05, False, judged),
        ]  # fmt: skip
    if (longrun := results.get("longrun")) is not None:
        checks += [
            TargetCheck("long run: RSS flat (growth / allowance)",
                        longrun.ratios.get("rss_growth_vs_allowance"), 1.0, False, judged),
            TargetCheck("long run: open descriptors flat (growth / allowance)",
                        longrun.ratios.get("fd_growth_vs_allowance"), 1.0, False, judged),
        ]  # fmt: skip
    checks += _postgres_targets(results, judged)
    if (cluster := results.get("cluster")) is not None:
        checks += cluster_scenario.targets(cluster, judged)
    if results:
        worst = min(result.to_json()["delivered_ratio"] for result in results.values())
        checks.append(TargetCheck("every scenario delivered/expected = 1.0", worst, 1.0,
                                  higher_is_better=True))  # fmt: skip
    return checks


def _postgres_targets(results: dict[str, ScenarioResult], judged: bool) -> list[TargetCheck]:
    """Clubroom on PostgreSQL against the same server on SQLite (issue 12)."""
    checks: list[TargetCheck] = []
    s1, s1pg = results.get("s1"), results.get("s1pg")
    if s1 is not None and s1pg is not None:
        sqlite_rate, postgres_rate = s1.clubroom.deliveries_per_s, s1pg.clubroom.deliveries_per_s
        versus = postgres_rate / sqlite_rate if sqlite_rate and postgres_rate else None
        checks.append(
            TargetCheck("S1 on PostgreSQL deliveries/s ≥ 0.8× on SQLite", versus, 0.8, True,
                        judged)
        )  # fmt: skip
    if (s5pg := results.get("s5pg")) is not None:
        checks.append(
            TargetCheck("S5 on PostgreSQL join 100k ≤ 1.5× join 1k (p50)",
                        s5pg.ratios.get("big_vs_small_p50"), 1.5, False, judged)
        )  # fmt: skip
    return checks


def _num(value: float | None, digits: int = 1, grouped: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}" if grouped else f"{value:.{digits}f}"


def _cells(result: ScenarioResult, row: Measurement, first: bool) -> list[str]:
    lat = row.latency
    key, label = _PRIMARY_RATIO[result.key]
    primary = result.ratios.get(key)
    lower_bound = result.details.get("lower_bound", {}).get(row.target)
    row_spread = row.notes.get("spread") or {}
    primary_spread = (result.details.get("spread") or {}).get(key)
    ratio_text = ""
    if first and primary is not None:
        ratio_text = f"{primary:.2f}"
        if primary_spread and primary_spread[0] != primary_spread[2]:
            ratio_text += f" ({primary_spread[0]:.2f}–{primary_spread[2]:.2f})"
        ratio_text += f" ({label})"
    return [
        result.title if first else "",
        row.target,
        ("≥ " if lower_bound else "")
        + _num(row.deliveries_per_s, 0, grouped=True)
        + _range(row_spread.get("deliveries_per_s"), 0),
        _num(lat.p50_ms, 2),
        _num(lat.p99_ms, 2),
        _num(lat.max_ms, 2),
        _num(row.cpu_us_per_delivery, 2) + _range(row_spread.get("cpu_us_per_delivery"), 2),
        _num(row.rss_mib, 1),
        f"{row.delivered}/{row.expected}",
        ratio_text,
    ]


def _range(values: list[float] | None, digits: int) -> str:
    """ " (min–max)" after a median, when there was more than one repetition."""
    if not values or values[0] == values[2]:
        return ""
    return f" ({_num(values[0], digits, True)}–{_num(values[2], digits, True)})"


def rows(results: Iterable[ScenarioResult]) -> list[list[str]]:
    """Two rows per scenario: Clubroom (with the ratio) and its reference (the ceiling)."""
    table: list[list[str]] = []
    for result in results:
        table.append(_cells(result, result.clubroom, True))
        if result.ceiling is not None:
            table.append(_cells(result, result.ceiling, False))
        for row in getattr(result, "others", ()):  # the cluster scenario's SQLite row
            table.append(_cells(result, row, False))
    return table


def text_table(results: Iterable[ScenarioResult]) -> str:
    """A fixed-width table for the terminal."""
    body = rows(results)
    widths = [max(len(cell) for cell in column) for column in zip(_COLUMNS, *body, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(_COLUMNS, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in body:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(lines)


def markdown_table(results: Iterable[ScenarioResult]) -> str:
    """The same table in Markdown, for docs/readme-performance.md."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)


def targets_text(checks: list[TargetCheck], markdown: bool = False) -> str:
    """One line per target: measured value, limit, verdict."""
    lines = ["| target | measured | limit | verdict |", "|---|---|---|---|"] if markdown else []
    for check in checks:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[check.passed]
        if not check.judged:
            verdict = f"not judged {check.why_not}"
        value = _num(check.value, 2)
        limit = f"{'≥' if check.higher_is_better else '≤'} {check.limit:g}"
        if markdown:
            lines.append(f"| {check.name} | {value} | {limit} | {verdict} |")
        else:
            lines.append(f"  {check.name:56} {value:>8}  ({limit})  {verdict}")
    return "\n".join(lines)


def s1_steps_text(result: ScenarioResult) -> str:
    """S1's repetitions: both servers' sustained rates and why each climb ended."""
    lines = []
    for index, rep in enumerate(result.details.get("repetitions", [])):
        parts = []
        for target, summary in rep.items():
            if target == "ratio":
                continue
            parts.append(
                f"{target} {_num(summary['deliveries_per_s'], 0, True)}/s "
                f"(send {_num(summary['sustained_send_rate'], 1)}/s, "
                f"failed at {_num(summary['failed_at_send_rate'], 1)})"
            )
        ratio_value = rep.get("ratio")
        lines.append(
            f"  repetition {index + 1}: " + "; ".join(parts)
            + f"; ratio {_num(ratio_value, 2)}"
        )  # fmt: skip
    runs = result.details.get("cpu_runs", {})
    if runs:
        rate = result.details.get("same_load_send_rate")
        lines.append(f"  CPU phase at {_num(rate, 0, True)} sends/s (µs per delivery):")
        for target, target_runs in runs.items():
            values = ", ".join(_num(run["cpu_us_per_delivery"], 2) for run in target_runs)
            lines.append(f"    {target:12} {values}")
        ratios = ", ".join(_num(value, 2) for value in result.details.get("cpu_ratios", []))
        lines.append(f"    ratios       {ratios}")
    for note in result.details.get("loadgen_notes", []):
        lines.append(f"  note: {note}")
    for target in result.details.get("cpu_rate_not_sustained_by", []):
        lines.append(f"  note: {target} did not sustain the CPU phase's rate in every run")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")

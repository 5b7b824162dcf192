"""``python -m bench``: run the scenarios against Clubroom and the ceiling, report both.

Prints a table and writes ``bench/results/bench-<time>.json`` (plus
``latest.json`` and ``latest.md``). ``--quick`` runs tiny versions of every
scenario in a few seconds; the smoke test uses it.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cluster_scenario, fanout, longrun, report, scenarios
from bench.config import BenchConfig
from bench.harness import Harness
from bench.servers import REPO_ROOT
from bench.stats import ScenarioResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCENARIOS = ("s1", "s2", "s3", "s4", "s5")
POSTGRES_SCENARIOS = ("s1pg", "s5pg")  # S1 and S5 again, Clubroom on PostgreSQL
# Run only when named with --only: the long run (minutes), /metrics on vs off, two versions,
# one node vs two on PostgreSQL + Redis (needs --postgres and --redis)
OPT_IN = ("longrun", "metrics", "versus", "cluster")


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; children (servers) inherit it.

    10,000 idle connections need 10,000 descriptors in the server and as many
    across the workers, well above the usual soft limit of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Clubroom against a bare websockets relay (the ceiling).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument(
        "--only",
        help="comma-separated scenarios (default: all; s1pg and s5pg need --postgres)",
    )
    parser.add_argument(
        "--postgres",
        help="admin URL of a PostgreSQL (may create databases): also run S1 and S5 with "
        "Clubroom on PostgreSQL (s1pg, s5pg), beside SQLite",
    )
    parser.add_argument(
        "--redis",
        help="Redis URL for the cluster scenario's bus (with --postgres): "
        "SQLite vs 1 vs 2 nodes on PostgreSQL + Redis",
    )
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--ceiling-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="event loop of the ceiling server",
    )  # fmt: skip
    parser.add_argument(
        "--clubroom-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
        help="Clubroom's --event-loop (auto: uvloop when installed, as the server does)",
    )  # fmt: skip
    parser.add_argument(
        "--no-pin", action="store_true",
        help="don't pin servers and load generator to separate CPUs",
    )  # fmt: skip
    parser.add_argument(
        "--server-cpu-share", type=float,
        help="S1 and versus climbs: cap every server at this share of one CPU (cgroup "
        "quota) so the server, not the load generator, ends each climb (default 0.5; "
        "0: uncapped)",
    )  # fmt: skip
    parser.add_argument(
        "--node-cpu-share", type=float,
        help="cluster climbs: cap each node at this share of one CPU (default 0.35; 0: "
        "uncapped)",
    )  # fmt: skip
    parser.add_argument(
        "--server-root", type=Path,
        help="run clubroom_server from this checkout instead (to compare two versions)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="where to write the JSON (default: results/)")
    parser.add_argument(
        "--keep", action="store_true", help="keep server logs and databases (for debugging)"
    )
    parser.add_argument("--s1-rate", type=float, help="S4: use this S1 peak (sends/s)")
    parser.add_argument(
        "--repetitions", type=int,
        help="S1 and versus: climbs to the sustained rate, and CPU-phase pairs (default 3; "
        "0: no climbs, only the CPU phase)",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-rate", type=float,
        help="send rate (messages/s) of the CPU phase (default: half the lower sustained rate; "
        "metrics: 300)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-root", type=Path,
        help="versus: the other checkout whose server this one is compared with",
    )  # fmt: skip
    parser.add_argument(
        "--minutes", type=float, help="longrun: how long (default 30)"
    )  # fmt: skip
    parser.add_argument(
        "--sample-seconds", type=float, help="longrun: RSS and descriptors every … s (default 60)"
    )  # fmt: skip
    parser.add_argument(
        "--cycle-seconds", type=float,
        help="longrun: chat this long between rounds of churn (default 10; with --no-chat, "
        "the pause between rounds)",
    )  # fmt: skip
    parser.add_argument(
        "--no-chat", action="store_true",
        help="longrun: churn only (joins, leaves, reconnects, newcomers), no chat",
    )  # fmt: skip
    parser.add_argument(
        "--no-churn", action="store_true", help="longrun: chat only, no joins, leaves or newcomers"
    )  # fmt: skip
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> BenchConfig:
    """The preset (full or quick) with the command line's changes."""
    config = BenchConfig.quick_preset() if args.quick else BenchConfig.full()
    changes: dict[str, Any] = {
        "workers": args.workers,
        "ceiling_loop": args.ceiling_loop,
        "clubroom_loop": args.clubroom_loop,
        "pin": not args.no_pin,
        "server_root": str(args.server_root.resolve()) if args.server_root else None,
        "baseline_root": str(args.baseline_root.resolve()) if args.baseline_root else None,
        "postgres": args.postgres,
        "redis": args.redis,
    }
    if args.server_cpu_share is not None:
        changes["server_cpu_share"] = args.server_cpu_share or None
    if args.node_cpu_share is not None:
        changes["cluster_node_cpu_share"] = args.node_cpu_share or None
    if args.repetitions is not None:  # 0: no climbs, only the CPU phase (3 pairs)
        changes["s1_repetitions"] = args.repetitions
        if args.repetitions > 0:
            changes["s1_cpu_pairs"] = args.repetitions
    if args.cpu_rate:
        changes["s1_cpu_rate"] = args.cpu_rate
    if args.minutes is not None:
        changes["longrun_minutes"] = args.minutes
    if args.sample_seconds:
        changes["longrun_sample_seconds"] = args.sample_seconds
    if args.cycle_seconds:
        changes["longrun_cycle_seconds"] = args.cycle_seconds
    changes["longrun_chat"] = not args.no_chat
    changes["longrun_churn"] = not args.no_churn
    return config.with_changes(**changes)


def run_scenarios(
    harness: Harness, selected: list[str], s1_peak: float | None
) -> tuple[dict[str, ScenarioResult], dict[str, str]]:
    """Run the selected scenarios in order; a failing one is recorded, not fatal."""
    results: dict[str, ScenarioResult] = {}
    errors: dict[str, str] = {}

    def s4() -> ScenarioResult:
        peak = s1_peak
        if "s1" in results:
            peak = results["s1"].details.get("peak_send_rate") or peak
        return scenarios.s4_login_storm(harness, peak)

    runners: dict[str, Callable[[], ScenarioResult]] = {
        "s1": lambda: fanout.s1_fanout(harness),
        "s2": lambda: scenarios.s2_big_room(harness),
        "s3": lambda: scenarios.s3_idle_connections(harness),
        "s4": s4,
        "s5": lambda: scenarios.s5_join_big_room(harness),
        "s1pg": lambda: on_postgres(harness, "s1pg", fanout.s1_fanout),
        "s5pg": lambda: on_postgres(harness, "s5pg", scenarios.s5_join_big_room),
        "longrun": lambda: longrun.longrun(harness),
        "metrics": lambda: fanout.metrics_cost(harness),
        "versus": lambda: fanout.versus_baseline(harness),
        "cluster": lambda: cluster_scenario.cluster(harness),
    }
    for key in selected:
        started = time.monotonic()
        harness.log(f"[{key}] running…")
        try:
            results[key] = runners[key]()
        except Exception:
            errors[key] = traceback.format_exc()
            harness.log(f"[{key}] FAILED:\n{errors[key]}")
            continue
        results[key].details["seconds"] = round(time.monotonic() - started, 1)
        harness.log(f"[{key}] {results[key].headline} ({results[key].details['seconds']} s)")
    return results, errors


def on_postgres(
    harness: Harness, key: str, scenario: Callable[[Harness], ScenarioResult]
) -> ScenarioResult:
    """Run a scenario with Clubroom on a fresh PostgreSQL database (per server start)."""
    harness.postgres = harness.config.postgres
    try:
        result = scenario(harness)
    finally:
        harness.postgres = None
    result.key = key
    result.title += " (PostgreSQL)"
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = configure(args)
    default = SCENARIOS + (POSTGRES_SCENARIOS if args.postgres else ())
    selected = [key.strip() for key in (args.only or ",".join(default)).split(",") if key.strip()]
    if set(selected) & set(POSTGRES_SCENARIOS) and not args.postgres:
        print("s1pg and s5pg need --postgres URL", file=sys.stderr)
        return 2
    if "cluster" in selected and not (args.postgres and args.redis):
        print("cluster needs --postgres URL and --redis URL", file=sys.stderr)
        return 2
    if "versus" in selected and not args.baseline_root:
        print("versus needs --baseline-root PATH (another checkout)", file=sys.stderr)
        return 2
    if args.no_chat and args.no_churn:
        print("--no-chat and --no-churn together leave nothing to run", file=sys.stderr)
        return 2
    unknown = set(selected) - set(SCENARIOS) - set(POSTGRES_SCENARIOS) - set(OPT_IN)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    fd_limit = raise_fd_limit()
    # SIGTERM unwinds like Ctrl-C, so every server started so far is stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started_at = datetime.now(UTC)
    started = time.monotonic()
    harness = Harness(config, keep=args.keep)
    try:
        results, errors = run_scenarios(harness, selected, args.s1_rate)
    finally:
        harness.close()
    checks = report.targets(results, quick=config.quick)
    document: dict[str, Any] = {
        "schema": 1,
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "quick": config.quick,
        "machine": {**report.machine(), "fd_limit": fd_limit},
        "server_version": report.server_version(
            Path(config.server_root) if config.server_root else REPO_ROOT
        ),
        "config": asdict(config),
        "pinning": {
            "servers": sorted(harness.server_cpus or ()),
            "load_generator": sorted(harness.loadgen_cpus or ()),
        },
        "scenarios": {key: result.to_json() for key, result in results.items()},
        "errors": errors,
        "targets": [check.to_json() for check in checks],
    }
    json_path = args.json or RESULTS_DIR / f"bench-{started_at:%Y%m%d-%H%M%S}.json"
    report.write_json(json_path, document)
    if args.json is None:
        report.write_json(RESULTS_DIR / "latest.json", document)
        (RESULTS_DIR / "latest.md").write_text(
            report.markdown_table(results.values()) + "\n\n" + report.targets_text(checks, True)
            + "\n"
        )  # fmt: skip
    print_summary(results, checks, document, json_path)
    return 1 if errors else 0


def print_summary(
    results: dict[str, ScenarioResult],
    checks: list[Any],
    document: dict[str, Any],
    json_path: Path,
) -> None:
    """The terminal report: machine, table, S1's ladder, key figures, targets."""
    info = document["machine"]
    version = document["server_version"]
    print(f"\nClubroom benchmark — server {version['commit']}"
          f"{' (modified)' if version['server_code_modified'] else ''} — "
          f"{info['nproc']} × {info['cpu_model']}, "
          f"Python {info['python']}, websockets {info['websockets']}"
          f"{' (quick)' if document['quick'] else ''}\n")  # fmt: skip
    print(report.text_table(results.values()))
    for key in ("s1", "s1pg", "metrics", "versus"):
        if key in results:
            print(f"\n{key} repetitions:\n" + report.s1_steps_text(results[key]))
    if "cluster" in results:
        print("\ncluster:\n" + cluster_scenario.summary_text(results["cluster"]))
    if "longrun" in results:
        print("\nlong run samples:\n" + longrun.samples_text(results["longrun"]))
    print("\nKey figures:")
    for result in results.values():
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in result.ratios.items() if v is not None)
        print(f"  {result.key}: {result.headline}; {ratios}")
    print("\nTargets:\n" + report.targets_text(checks))
    for key, error in document["errors"].items():
        print(f"\n{key} failed: {error.strip().splitlines()[-1]}")
    print(f"\nJSON: {json_path}  ({document['seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())

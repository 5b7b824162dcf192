"""Smoke test of the benchmark: ``python -m bench --quick`` runs every scenario end to end.

It checks only that the machinery works and that nothing was lost — every
scenario delivered everything it should, on Clubroom and on the ceiling —
never how fast anything was (timings on a shared CI machine mean nothing).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.services import POSTGRES_VAR, REDIS_VAR, postgres_url, redis_url

REPO_ROOT = Path(__file__).resolve().parent.parent
# With a test PostgreSQL, S1 and S5 also run with Clubroom on PostgreSQL (s1pg, s5pg).
POSTGRES = os.environ.get(POSTGRES_VAR) or None
# With Redis as well, the cluster scenario: SQLite, one node and two nodes.
REDIS = os.environ.get(REDIS_VAR) or None
CLUSTER = ("cluster",) if POSTGRES and REDIS else ()
DEFAULT = ("s1", "s2", "s3", "s4", "s5") + (("s1pg", "s5pg") if POSTGRES else ())
# the opt-in long run too, for 3 s (metrics and versus share S1's machinery)
SCENARIOS = (*DEFAULT, "longrun", *CLUSTER)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="the benchmark reads server costs from /proc"
)


def _run_quick_bench(output: Path) -> str:
    """Run the quick benchmark, writing its JSON to ``output``; return what it printed."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(output),
         "--only", ",".join(SCENARIOS), "--minutes", "0.05", "--sample-seconds", "0.5"]
        + (["--postgres", POSTGRES] if POSTGRES else [])
        + (["--redis", REDIS] if CLUSTER else []),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """Run the quick benchmark once per test run; return the JSON it wrote and what it printed.

    Under pytest-xdist every worker that takes a test of this module builds
    this fixture: the first runs the benchmark, the others wait on a lock and
    read its results. Two benchmarks at once would pin their servers to the
    same CPU and crowd the test PostgreSQL (it then refuses connections).
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    folder = (
        tmp_path_factory.getbasetemp().parent / f"bench-{run_id}"
        if run_id
        else tmp_path_factory.mktemp("bench")
    )
    folder.mkdir(exist_ok=True)
    output, printed = folder / "quick.json", folder / "quick.out"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not printed.exists():
            printed.write_text(_run_quick_bench(output))
    results: dict[str, Any] = json.loads(output.read_text())
    return results, printed.read_text()


@pytest.fixture(scope="module")
def quick_results(quick_run: tuple[dict[str, Any], str]) -> dict[str, Any]:
    return quick_run[0]


def test_quick_run_reports_every_scenario(quick_results: dict[str, Any]) -> None:
    """The JSON holds every scenario asked for and no scenario failed."""
    assert quick_results["quick"] is True
    assert quick_results["errors"] == {}
    assert sorted(quick_results["scenarios"]) == sorted(SCENARIOS)


@pytest.mark.parametrize("key", SCENARIOS)
def test_scenario_delivered_everything(quick_results: dict[str, Any], key: str) -> None:
    """Each scenario delivered exactly what was expected, on both servers."""
    scenario = quick_results["scenarios"][key]
    assert scenario["delivered_ratio"] == 1.0
    for target in ("clubroom", "ceiling"):
        row = scenario[target]
        if row is None:  # the long run has no ceiling
            assert key == "longrun"
            continue
        assert row["expected"] > 0
        assert row["delivered"] == row["expected"], (target, row)


def test_machine_and_targets_recorded(quick_results: dict[str, Any]) -> None:
    """The run records the machine it ran on and lists every target."""
    assert quick_results["machine"]["nproc"] >= 1
    names = [target["name"] for target in quick_results["targets"]]
    assert any(name.startswith("S1") for name in names)
    assert any(name.startswith("long run") for name in names)
    assert any(name.startswith("every scenario") for name in names)


def test_quick_judges_no_timing_target(quick_run: tuple[dict[str, Any], str]) -> None:
    """A smoke run cannot measure speed: only "nothing lost" gets a verdict, the rest say so."""
    results, printed = quick_run
    judged = {t["name"]: t["passed"] for t in results["targets"] if t["judged"]}
    assert judged == {
        "S2 nothing lost (delivered/expected)": True,
        "every scenario delivered/expected = 1.0": True,
    }
    assert all(t["passed"] is None for t in results["targets"] if not t["judged"])
    targets = printed[printed.index("Targets:") :]
    timing = [line for line in targets.splitlines()[1:] if "≤" in line or "≥" in line]
    assert timing
    for line in timing:
        if "nothing lost" in line or "every scenario" in line:
            assert line.rstrip().endswith("PASS"), line
        else:
            assert line.rstrip().endswith("not judged in --quick"), line


def test_fanout_reports_repetitions_and_cpu_phase(quick_results: dict[str, Any]) -> None:
    """S1 keeps each repetition's sustained rates and the CPU phase's runs at one rate."""
    details = quick_results["scenarios"]["s1"]["details"]
    assert len(details["repetitions"]) >= 1
    for rep in details["repetitions"]:
        assert rep["clubroom"]["sustained_send_rate"] > 0
        assert rep["ceiling"]["sustained_send_rate"] > 0
    assert details["same_load_send_rate"] > 0
    for target in ("clubroom", "ceiling"):
        runs = details["cpu_runs"][target]
        assert runs and all(run["delivered"] == run["expected"] > 0 for run in runs)
    assert set(details["spread"]) >= {"deliveries_per_s", "cpu_per_delivery_same_load"}


def test_login_storm_compares_calm_and_storm_per_repetition(
    quick_results: dict[str, Any],
) -> None:
    """S4 records, per repetition, chat p99 in the storm and calm over the same span."""
    details = quick_results["scenarios"]["s4"]["details"]
    assert details["repetitions"]
    for rep in details["repetitions"]:
        assert rep["storm_p99_ms"] is not None and rep["calm_p99_ms"] is not None
        assert rep["window_seconds"] > 0


def test_cluster_compares_two_nodes_with_one_and_sqlite(quick_results: dict[str, Any]) -> None:
    """The cluster scenario ran SQLite, one node and two nodes on the same load, lost
    nothing on any of them, and compared two nodes with one at a common rate."""
    postgres_url(), redis_url()  # skip, or fail where the services are required (.ci/run)
    scenario = quick_results["scenarios"]["cluster"]
    assert scenario["details"]["nodes"] == {"sqlite-1": 1, "pg-1": 1, "pg-2": 2}
    rows = [scenario["clubroom"], scenario["ceiling"], *scenario["others"]]
    assert [row["target"] for row in rows] == ["pg-2", "pg-1", "sqlite-1"]
    for row in rows:
        assert row["delivered"] == row["expected"] > 0, row
    assert scenario["details"]["common_rates"]
    for figures in scenario["details"]["common_rates"].values():
        for label, deployment in figures["deployments"].items():
            assert all(run["delivered"] == run["expected"] > 0 for run in deployment["runs"]), label
        assert figures["two_vs_one"]["p99_added_ms"] is not None
        assert figures["two_vs_one"]["cpu_per_delivery"] is not None
    names = [target["name"] for target in quick_results["targets"]]
    assert any(name.startswith("cluster: 2 nodes add") for name in names)


def test_long_run_samples_memory_and_descriptors(quick_results: dict[str, Any]) -> None:
    """The long run sampled RSS and descriptors, churned members, and lost no message."""
    details = quick_results["scenarios"]["longrun"]["details"]
    assert len(details["samples"]) >= 3
    assert all(s["rss_mib"] > 0 and s["fds"] > 0 for s in details["samples"])
    assert details["moves"] > 0 and details["reconnects"] > 0 and details["newcomers"] > 0


def test_store_throughput_reports_every_backend_and_writer_count() -> None:
    """``python -m bench.store`` measures appends/s with 1, 10 and 100 writers per backend."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.store", "--seconds", "0.2"]
        + (["--postgres", POSTGRES] if POSTGRES else []),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["SQLite (synchronous=FULL)"] + (
        ["PostgreSQL"] if POSTGRES else []
    )
    assert all(row.count("/s") == 3 for row in rows)

"""Smoke test of the benchmark: ``python -m bench --quick`` runs every scenario end to end.

It checks only that the machinery works and that nothing was lost — every
scenario delivered everything it should, on Clubroom and on the ceiling —
never how fast anything was (timings on a shared CI machine mean nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.services import POSTGRES_VAR

REPO_ROOT = Path(__file__).resolve().parent.parent
# With a test PostgreSQL, S1 and S5 also run with Clubroom on PostgreSQL (s1pg, s5pg).
POSTGRES = os.environ.get(POSTGRES_VAR) or None
SCENARIOS = ("s1", "s2", "s3", "s4", "s5") + (("s1pg", "s5pg") if POSTGRES else ())

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="the benchmark reads server costs from /proc"
)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the quick benchmark once and load the JSON it wrote."""
    output = tmp_path_factory.mktemp("bench") / "quick.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(output)]
        + (["--postgres", POSTGRES] if POSTGRES else []),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results: dict[str, Any] = json.loads(output.read_text())
    return results


def test_quick_run_reports_every_scenario(quick_results: dict[str, Any]) -> None:
    """The JSON holds all five scenarios and no scenario failed."""
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
        assert row["expected"] > 0
        assert row["delivered"] == row["expected"], (target, row)


def test_machine_and_targets_recorded(quick_results: dict[str, Any]) -> None:
    """The run records the machine it ran on and evaluates every target."""
    assert quick_results["machine"]["nproc"] >= 1
    names = [target["name"] for target in quick_results["targets"]]
    assert any(name.startswith("S1") for name in names)
    assert any(name.startswith("every scenario") for name in names)


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

"""The bench's CPU cap holds a server to its share of a CPU, and leaves nothing behind.

S1's climbs cap every server at the same share of one CPU (``bench/quota.py``)
so that the server, not the load generator, ends each climb. If the cap did
not bite, the climbs would again measure the load generator. A busy process
is capped here at a quarter of a CPU: gathering 0.2 s of CPU must then take
about 0.8 s (at least 0.6 s) and the cgroup must report throttling.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.quota import CpuQuota, capped
from bench.servers import ServerProcess
from tests.waiting import wait_until

SHARE = 0.25
CPU_SECONDS = 0.2


def _busy_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    return ServerProcess("busy", process, None).cpu_seconds()  # type: ignore[arg-type]


async def test_a_capped_process_gets_its_share_and_the_cgroup_goes_afterwards() -> None:
    probe = CpuQuota.create("probe")
    if probe is None:
        pytest.skip("no writable cgroup CPU controller here (the bench then runs uncapped)")
    probe.remove()
    process = _busy_process()
    try:
        with capped({"busy": process.pid}, SHARE) as uncapped:
            assert uncapped == []
            started, cpu_before = time.monotonic(), _cpu_seconds(process)
            await wait_until(lambda: _cpu_seconds(process) - cpu_before >= CPU_SECONDS, 10)
            took = time.monotonic() - started
            groups = [p for p in probe.path.parent.iterdir() if p.name.startswith("clubroom-bench")]
            throttled = CpuQuota(groups[0], probe.v2).throttled_seconds()
        assert took >= 0.75 * CPU_SECONDS / SHARE, f"0.2 s of CPU in {took:.2f} s: not capped"
        assert throttled > 0
        assert not groups[0].exists(), "the cgroup was left behind"
    finally:
        process.kill()
        process.wait()


def test_no_share_means_no_cap() -> None:
    with capped({"server": 1}, None) as uncapped:
        assert uncapped == ["server"]

"""The bench's CPU cap holds a server to its share of a CPU, and leaves nothing behind.

S1's climbs cap every server process at the same share of one CPU
(``bench/quota.py``) so that the server, not the load generator, ends each
climb. If the cap did not bite, the climbs would again measure the load
generator; if its held-back time counted as waiting for a CPU, every capped
step would look crowded. A busy process is capped here at a quarter of a CPU:
gathering 0.2 s of CPU must take about 0.8 s (at least 0.6 s), the cap must
report that time, and the server's wait must not include it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.quota import CpuQuota, capped
from bench.servers import ServerProcess
from tests.services import unusable
from tests.waiting import wait_until

SHARE = 0.25
CPU_SECONDS = 0.2


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[ServerProcess]:
    """A process that wants a whole CPU, as a server at its limit does.

    At a high priority where allowed (root), so that on a busy machine (the
    suite runs several workers on two cores) it still gets more than its cap
    and the cap, not the other workers, decides how much it runs.
    """
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, process.pid, -10)
    yield ServerProcess("busy", process, tmp_path / "busy.log")
    process.kill()
    process.wait()


async def test_a_capped_process_gets_its_share_and_the_cgroup_goes_afterwards(
    busy: ServerProcess,
) -> None:
    probe = CpuQuota.create("probe")
    if probe is None:
        unusable("no writable cgroup CPU controller here (the bench then runs uncapped)")
    probe.remove()
    with capped([busy], SHARE) as uncapped:
        assert uncapped == []
        assert busy.throttled is not None
        started, cpu_before, wait_before = time.monotonic(), busy.cpu_seconds(), busy.wait_seconds()
        await wait_until(lambda: busy.cpu_seconds() - cpu_before >= CPU_SECONDS, 10)
        took = time.monotonic() - started
        held_back, waited = busy.throttled(), busy.wait_seconds() - wait_before
        groups = list(probe.path.parent.glob("clubroom-bench-*"))
    assert took >= 0.75 * CPU_SECONDS / SHARE, f"0.2 s of CPU in {took:.2f} s: not capped"
    assert held_back >= 0.3 * (took - CPU_SECONDS), "the cap's held-back time was not read"
    assert waited < held_back, f"waited {waited:.2f} s, held back {held_back:.2f}: the cap counted"
    assert busy.throttled is None
    assert groups and not any(group.exists() for group in groups), "a cgroup was left behind"


def test_no_share_means_no_cap(busy: ServerProcess) -> None:
    with capped([busy], None) as uncapped:
        assert uncapped == ["busy"]
        assert busy.throttled is None

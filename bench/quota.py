"""A CPU quota for the servers under test, so that the server, not the load generator, ends a climb.

On two cores the bench pins the server to one and the load generator to
the other. The bare-websockets ceiling writes one TCP segment per frame,
and reading those costs the load generator about as much as writing them
costs the ceiling, so the ceiling's climb often ended with the load
generator's core full: its sustained rate was then a lower bound, and the
Clubroom/ceiling ratio not a measurement of the servers at all (issue 17).

Capping every server at the same share of a CPU (a Linux cgroup CPU quota,
10 ms periods) makes each server run out of CPU well before the load
generator does, so each climb ends at the server's own limit, and the ratio
of two capped servers is the ratio of their work per delivery. The cap
applies to climbs only; CPU per delivery is measured uncapped.

Where no cgroup CPU controller is writable (not root, a container without
one) the bench runs uncapped and says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from bench.servers import ServerProcess

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000  # short periods: a capped server waits at most a few ms at a time


class CpuQuota:
    """One cgroup holding the given processes, capped at ``share`` of one CPU.

    Both cgroup layouts are handled: v1's ``cpu`` hierarchy
    (``cpu.cfs_quota_us``) and v2's unified one (``cpu.max``).
    """

    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    @classmethod
    def create(cls, name: str) -> CpuQuota | None:
        """A fresh cgroup, or None where none can be made (the reason is not an error)."""
        for base, v2 in ((CGROUP_ROOT / "cpu", False), (CGROUP_ROOT, True)):
            probe = base / ("cpu.max" if v2 else "cpu.cfs_quota_us")
            if not probe.exists() and not (v2 and (base / "cgroup.subtree_control").exists()):
                continue
            path = base / f"clubroom-bench-{os.getpid()}-{name}"
            try:
                path.mkdir()
            except OSError:
                continue
            quota = cls(path, v2)
            if quota._writable():
                return quota
            quota.remove()
        return None

    def _writable(self) -> bool:
        try:
            self.limit(None)
        except OSError:
            return False
        return True

    def add(self, pids: Iterable[int]) -> None:
        """Move each process, with all its threads, into this cgroup."""
        for pid in pids:
            (self.path / "cgroup.procs").write_text(str(pid))

    def limit(self, share: float | None) -> None:
        """Cap at ``share`` of one CPU (None: no cap)."""
        quota = -1 if share is None else max(1_000, round(share * PERIOD_US))
        if self.v2:
            (self.path / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def throttled_seconds(self) -> float:
        """Time the cap held the group back so far (cpu.stat)."""
        fields = dict(
            line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line
        )
        if "throttled_usec" in fields:
            return int(fields["throttled_usec"]) / 1e6
        return int(fields.get("throttled_time", 0)) / 1e9

    def remove(self) -> None:
        """Move the processes back to the parent and delete the group."""
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.path.parent / "cgroup.procs").write_text(pid)
            self.path.rmdir()


@contextlib.contextmanager
def capped(servers: Sequence[ServerProcess], share: float | None) -> Iterator[list[str]]:
    """Cap every server process at ``share`` of a CPU for the block; yields what was not capped.

    Each process gets a cap of its own (a cluster's two nodes, twice one
    node's CPU, as two machines would). An empty list means every process is
    capped; otherwise the names of those that run uncapped (no cgroup could be
    made: then none is capped, since a half-capped comparison means nothing).
    While capped, a process's ``throttled`` reads how long the cap held it back.
    """
    processes = [process for server in servers for process in server.processes()]
    if share is None:
        yield [process.name for process in processes]
        return
    quotas: list[CpuQuota] = []
    try:
        for index, process in enumerate(processes):
            quota = CpuQuota.create(f"{index}")
            if quota is None:
                break
            quota.add([process.pid])
            quota.limit(share)
            quotas.append(quota)
        if len(quotas) < len(processes):
            _release(quotas)
            yield [process.name for process in processes]
        else:
            for process, quota in zip(processes, quotas, strict=True):
                process.throttled = quota.throttled_seconds
            yield []
    finally:
        for process in processes:
            process.throttled = None
        _release(quotas)


def _release(quotas: list[CpuQuota]) -> None:
    for quota in quotas:
        quota.remove()
    quotas.clear()

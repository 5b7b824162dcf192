"""Starting the servers under test in their own processes, and reading their cost.

Both servers run as separate processes so that their CPU time and memory can
be read from ``/proc`` without counting the load generator: CPU is utime +
stime of the process and its descendants (``/proc/PID/stat``), memory is the
sum of their ``VmRSS`` (``/proc/PID/status``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clubroom_server.store import is_postgres_url

REPO_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_CPUS_AT_START = frozenset(os.sched_getaffinity(0))  # before anything pins this process
_PR_SET_PDEATHSIG = 1
_LISTENING = re.compile(rb"listening on wss?://[^\s:]+:(\d+)")


class ServerStartError(RuntimeError):
    """A server process exited or never said it was listening."""


@dataclass
class ServerProcess:
    """A running server: its process, port and log, and how to read its cost."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    # While capped: seconds the cap has held the process back so far (bench/quota.py).
    throttled: Callable[[], float] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def processes(self) -> list[ServerProcess]:
        """Every server process this stands for (itself; a cluster's node set: each node)."""
        return [self]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and any processes it started."""
        return sum(_cpu_of(pid) for pid in _process_tree(self.pid)) / _CLOCK_TICKS

    def wait_seconds(self) -> float:
        """Time the server's threads were runnable but waiting for a CPU (schedstat).

        High while the server was failing a step means it was crowded out by
        other processes (or its own other threads), not that it was too slow.
        Time held back by the bench's own CPU cap (``bench/quota.py``) is not
        crowding: the kernel counts it as waiting, so it is taken off.
        """
        waited = sum(_wait_of(pid) for pid in _process_tree(self.pid)) / 1e9
        return waited - (self.throttled() if self.throttled else 0.0)

    def rss_bytes(self) -> int:
        """Resident memory of the server and any processes it started."""
        return sum(_rss_of(pid) for pid in _process_tree(self.pid))

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (orderly shutdown), then SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _process_tree(pid: int) -> list[int]:
    """The pid and all its descendants (found through /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        task_dir = Path(f"/proc/{current}/task")
        try:
            tasks = list(task_dir.iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def _cpu_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _wait_of(pid: int) -> int:
    """Run-queue wait of every thread of one process, in ns (/proc/PID/task/*/schedstat)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


def _rss_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def all_cpus() -> set[int]:
    """Every CPU this benchmark may use (its affinity when it started)."""
    return set(_CPUS_AT_START)


def named_cpu_seconds(names: frozenset[str], extra_pids: Sequence[int] = ()) -> float:
    """CPU time used so far by every process called one of ``names`` (``/proc/PID/comm``),
    and by ``extra_pids``: what a deployment's database, bus and load generator cost."""
    total = sum(_cpu_of(pid) for pid in extra_pids)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            total += _cpu_of(int(entry.name))
    return total / _CLOCK_TICKS


def softirq_seconds(cpus: set[int] | None) -> float | None:
    """irq + softirq time of these CPUs (/proc/stat), or None when not pinned.

    Loopback TCP does much of its work in softirq, which is charged to no
    process: with the server pinned, its CPUs' softirq time is mostly its own.
    """
    if not cpus:
        return None
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            total += int(values[5]) + int(values[6])
    return total / _CLOCK_TICKS


def busy_seconds(cpus: set[int] | None) -> float | None:
    """Time these CPUs were busy with anything (/proc/stat: all but idle and iowait), or None.

    Minus what the server (or the load generator) used, it is what *other*
    processes took from the same CPUs: on a shared machine, the difference
    between a server that was slow and one that was crowded out.
    """
    if not cpus:
        return None
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
            total += user + nice + system + irq + softirq + steal
    return total / _CLOCK_TICKS


def free_port() -> int:
    """A currently free loopback port (bind to 0, read it, release it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def split_cpus(sample_seconds: float = 0.5) -> tuple[set[int], set[int]] | None:
    """Servers get the quieter half of this process's CPUs, the load generator the rest.

    Pinning keeps the server's event loop from being preempted by the load
    generator (on 2 cores: one core each), which makes steps repeatable. The
    half that was less busy over ``sample_seconds`` goes to the servers: on a
    shared machine another benchmark has often pinned its own servers to the
    first CPU. None on a single CPU, where there is nothing to split.
    """
    cpus = sorted(_CPUS_AT_START)
    if len(cpus) < 2:
        return None
    before = {cpu: busy_seconds({cpu}) or 0.0 for cpu in cpus}
    time.sleep(sample_seconds)
    load = {cpu: (busy_seconds({cpu}) or 0.0) - before[cpu] for cpu in cpus}
    ordered = sorted(cpus, key=lambda cpu: (load[cpu], cpu))
    half = len(cpus) // 2
    return set(ordered[:half]), set(ordered[half:])


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        """In the child: die with the benchmark (no server left behind); pin if asked."""
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def _launch(
    name: str,
    argv: list[str],
    log_path: Path,
    env: dict[str, str],
    cpus: set[int] | None,
    cwd: Path = REPO_ROOT,
) -> ServerProcess:
    log = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        preexec_fn=_child_setup(cpus),
    )
    log.close()
    return ServerProcess(name, process, log_path)


def wait_listening(server: ServerProcess, timeout: float = 30.0) -> ServerProcess:
    """Block until the server printed its ``listening on`` line and answers /healthz."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(f"{server.name} exited:\n{server.log_tail()}")
        match = _LISTENING.search(server.log_path.read_bytes())
        if match and healthz(int(match.group(1))):
            server.port = int(match.group(1))
            return server
        time.sleep(0.05)
    server.stop()
    raise ServerStartError(f"{server.name} did not start in {timeout} s:\n{server.log_tail()}")


def healthz(port: int) -> bool:
    """True if ``GET /healthz`` answers 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database for one server (its URL), dropped afterwards."""
    import asyncio
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    name = f"clubroom_bench_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(sql)
        finally:
            await admin.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def start_clubroom(
    workdir: Path,
    db_path: Path | str,
    *,
    argon2_profile: str | None = "cheapest",
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    root: Path = REPO_ROOT,
    extra_args: list[str] | None = None,
    db_pool_size: int | None = None,
) -> ServerProcess:
    """Launch ``clubroom-server serve`` on a free port with rate limiting off.

    ``argon2_profile=None`` keeps the server's default (real) hashing cost;
    ``root`` is the checkout whose ``clubroom_server`` runs (to compare two);
    ``db_pool_size`` sets a PostgreSQL server's pool (ignored for SQLite).
    """
    port = free_port()
    argv = [
        sys.executable, "-m", "clubroom_server", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--db", str(db_path), "--grace", "5", "--rate-limit", "0",
        # the load comes from one address and joins many rooms: those limits are off too
        "--room-rate-limit", "0", "--max-connections-per-address", "0",
        # ...and so are the per-address login, registration and handshake limits,
        # and the queue of password checks (S4 sends every login at once)
        "--login-failures-per-address", "0", "--registrations-per-address", "0",
        "--registrations-total", "0", "--max-handshakes-per-address", "0",
        "--hash-queue-limit", "100000",
    ]  # fmt: skip
    if argon2_profile:
        argv += ["--argon2-profile", argon2_profile]
    if db_pool_size is not None and is_postgres_url(str(db_path)):
        argv += ["--db-pool-size", str(db_pool_size)]
    argv += extra_args or []
    log = workdir / f"clubroom-{port}.log"
    server = _launch("clubroom", argv, log, env or {}, cpus, root)
    server.extra["argon2_profile"] = argon2_profile or "default"
    return server


def start_ceiling(workdir: Path, loop: str, cpus: set[int] | None = None) -> ServerProcess:
    """Launch the bare ``websockets`` relay (``bench.ceiling``) on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--loop", loop]
    server = _launch("ceiling", argv, workdir / f"ceiling-{port}.log", {}, cpus)
    server.extra["loop"] = loop
    return server

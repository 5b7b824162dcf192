"""The coordinator's handle on the load-generator processes.

Commands go out as ``(seq, name, kwargs)`` over a pipe and replies come back
tagged with the same ``seq``, so several commands (chat load on every worker
plus a login storm on some) can be in flight at once and collected later.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench.worker import worker_main


class WorkerError(RuntimeError):
    """A command failed inside a worker; the message is the worker's traceback."""


class Pending:
    """A command sent to one worker whose reply has not been read yet."""

    def __init__(self, pool: WorkerPool, worker: int, seq: int) -> None:
        self.pool, self.worker, self.seq = pool, worker, seq

    def result(self) -> Any:
        """Block until the reply arrives; raise ``WorkerError`` if the command failed."""
        return self.pool._wait(self.worker, self.seq)


class WorkerPool:
    """``size`` worker processes; a client id ``cid`` lives in worker ``cid % size``."""

    def __init__(self, size: int, cpus: set[int] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = size
        self._conns: list[Connection] = []
        self._processes: list[BaseProcess] = []
        self._replies: list[dict[int, tuple[bool, Any]]] = [{} for _ in range(size)]
        self._seq = 0
        for index in range(size):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, index, cpus),
                name=f"bench-worker-{index}",
                daemon=True,
            )
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [process.pid or 0 for process in self._processes]

    def owner(self, cid: int) -> int:
        """The worker that holds client ``cid``."""
        return cid % self.size

    def start(self, worker: int, name: str, **kwargs: Any) -> Pending:
        """Send a command without waiting for its reply."""
        self._seq += 1
        self._conns[worker].send((self._seq, name, kwargs))
        return Pending(self, worker, self._seq)

    def call(self, worker: int, name: str, **kwargs: Any) -> Any:
        """Run a command on one worker and return its result."""
        return self.start(worker, name, **kwargs).result()

    def start_each(self, name: str, per_worker: list[dict[str, Any]]) -> list[Pending]:
        """Send one command to every worker, each with its own arguments."""
        return [self.start(index, name, **kwargs) for index, kwargs in enumerate(per_worker)]

    def call_each(self, name: str, per_worker: list[dict[str, Any]]) -> list[Any]:
        """Run one command on every worker at once and return all results."""
        return [pending.result() for pending in self.start_each(name, per_worker)]

    def call_all(self, name: str, **kwargs: Any) -> list[Any]:
        """Run the same command with the same arguments on every worker."""
        return self.call_each(name, [kwargs] * self.size)

    def split(
        self, items: Iterable[Any], cid_of: Callable[[Any], int] | None = None
    ) -> list[list[Any]]:
        """Group items by the worker owning their client id (first element by default)."""
        groups: list[list[Any]] = [[] for _ in range(self.size)]
        for item in items:
            cid = cid_of(item) if cid_of else (item[0] if isinstance(item, tuple) else item.cid)
            groups[self.owner(cid)].append(item)
        return groups

    def _wait(self, worker: int, seq: int) -> Any:
        stash = self._replies[worker]
        while seq not in stash:
            got_seq, ok, value = self._conns[worker].recv()
            stash[got_seq] = (ok, value)
        ok, value = stash.pop(seq)
        if not ok:
            raise WorkerError(f"worker {worker} failed:\n{value}")
        return value

    def close(self) -> None:
        """Ask every worker to exit, then make sure it did."""
        for index, process in enumerate(self._processes):
            if process.is_alive():
                with contextlib.suppress(OSError, EOFError, WorkerError):
                    self.call(index, "exit")
            process.join(5)
            if process.is_alive():
                process.terminate()

"""SQLite's one writer: a thread of its own that takes whole batches, one wake-up each way.

The event loop only appends a write to a queue and, when the thread may be
asleep, rings a doorbell. The thread takes everything queued, commits it in
one transaction and hands all the results back in one ``call_soon_threadsafe``.
If writes arrived during the commit it starts the next batch at once, while
the loop is still announcing the previous one.

Why not ``run_in_executor`` per batch (what this replaced): that cost the loop
a task switch, an ``asyncio.Event``, a ``concurrent.futures`` future and its
asyncio twin per batch, and left the thread idle until the loop had settled
the batch — at a few hundred messages a second a batch holds one or two
messages, so those costs were paid per message (py-spy and the per-thread
CPU of the S1 benchmark, README "What made it fast").

**Pacing** (``pacing.CommitPacer``, ``--commit-interval``): while writes
stream in, the thread starts a commit at most once per interval and sleeps
out the rest of it, gathering what arrives meanwhile; a write after a quiet
spell is committed at once. Most of a commit's CPU (the ``fdatasync``, the
WAL frames, the search index's new segment) is then paid once for several
messages. Durability is unchanged: every write is still committed
(``synchronous=FULL``) before its caller, or anyone it is announced to,
hears of it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from clubroom_server.store.batch import Failed
from clubroom_server.store.interface import StoreError
from clubroom_server.store.pacing import CommitPacer

log = logging.getLogger(__name__)

STOP = object()  # returned by a call: the thread ends after answering it


class Call(NamedTuple):
    """Work on the writer's connection outside any transaction (connect, migrate, close)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


Commit = Callable[[sqlite3.Connection, list[Any]], list[Any]]
Settle = Callable[[list[Any], list[Any]], None]


class WriterThread:
    """Owns the writing connection; runs queued writes in batches and calls in order.

    ``commit(db, batch)`` commits a batch of writes and returns one result per
    write (a ``Failed`` for a write that could not be stored);
    ``settle(batch, results)`` then runs on the event loop, batches in commit
    order.
    """

    def __init__(self, commit: Commit, settle: Settle, pacer: CommitPacer | None = None) -> None:
        self._commit = commit
        self._settle = settle
        self._pacer = pacer or CommitPacer(0.0)
        self._queue: deque[Any] = deque()  # writes and Calls, in submission order
        self._doorbell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._ringing = False
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # A daemon, so that a store never closed cannot hang the interpreter's
        # exit; a commit is atomic, so being cut off mid-way loses nothing acknowledged.
        self._thread = threading.Thread(target=self._main, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, write: Any) -> None:
        """Queue a write for the next batch (on the loop; never blocks)."""
        self._queue.append(write)
        self._ring()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on the writer thread, after every write queued so far."""
        assert self._loop is not None, "the writer thread is not started"
        future = self._loop.create_future()
        self._queue.append(Call(fn, args, future))
        self._ring()
        return await future

    async def open_connection(self, path: Path, pragmas: str) -> None:
        """Open the writing connection on the thread and apply ``pragmas``."""

        def connect(_: None) -> None:
            db = sqlite3.connect(path, check_same_thread=False)
            try:
                db.executescript(pragmas)
            except BaseException:
                db.close()
                raise
            self._db = db

        await self.run(connect)

    async def close(self) -> None:
        """Close the connection after every queued write, and end the thread."""
        if self._thread is None:
            return

        def close(db: sqlite3.Connection | None) -> object:
            if db is not None:
                db.close()
            self._db = None
            return STOP

        await self.run(close)
        thread, self._thread = self._thread, None
        thread.join(5)

    # ------------------------------------------------------------ the thread

    def _ring(self) -> None:
        if not self._ringing:
            self._ringing = True
            self._doorbell.put(None)

    def _main(self) -> None:
        while True:
            self._doorbell.get()
            delay = self._pacer.delay()
            if delay:
                time.sleep(delay)  # a stream: let the writes of the rest of the interval join
            self._pacer.started()
            self._ringing = False  # before taking the queue: a write after this rings again
            if not self._drain():
                return

    def _drain(self) -> bool:
        """Run everything queued now, in order; False once the connection was closed."""
        batch: list[Any] = []
        while self._queue:
            item = self._queue.popleft()
            if not isinstance(item, Call):
                batch.append(item)
                continue
            if batch:
                self._commit_batch(batch)
                batch = []
            if not self._call(item):
                return False
        if batch:
            self._commit_batch(batch)
        return True

    def _commit_batch(self, batch: list[Any]) -> None:
        try:
            if self._db is None:
                raise StoreError("the store is not open")
            results = self._commit(self._db, batch)
        except Exception as exc:  # a bug, not the database: fail the batch, keep the thread
            log.exception("the writer thread failed a batch")
            error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
            results = [Failed(error)] * len(batch)
        self._pacer.finished(len(batch), bool(self._queue))  # before anyone hears of it
        self._post(self._settle, batch, results)

    def _call(self, call: Call) -> bool:
        try:
            result = call.fn(self._db, *call.args)
        except BaseException as exc:  # handed to the awaiting caller, as run_in_executor did
            self._post(_fail, call.future, exc)
            return True
        self._post(_resolve, call.future, None if result is STOP else result)
        return result is not STOP

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("the event loop closed before a write was answered")


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

"""Group-commit pacing: while writes stream in, commit at most once per interval.

A commit has a fixed cost whatever it holds: on SQLite with
``synchronous=FULL`` the WAL's ``fsync`` and the search index's new segment
(about 300 µs of CPU on the 2-core VM, measured), plus the hop to the writer
thread and back (40–180 µs there); on PostgreSQL a round trip and the
server's WAL flush. Messages that share a commit also share their fan-out
tick, so each member's connection gets one socket write carrying several
frames instead of one write per frame. At a few hundred messages a second
the writer is otherwise fast enough to commit nearly every message alone,
and those fixed costs dominate.

The pacer makes a write that arrives less than ``interval`` after the
previous commit started wait for the rest of the interval, gathering what
arrives meanwhile — but only in a *stream*: when the previous commit held
more than one write, or others arrived while it ran. A write after a quiet
spell (the usual case in a chat) is committed at once, and so is the next
write of one connection that waits for each commit before it sends again
(a script posting messages one by one): pacing it would hold it to one
message per interval. So pacing adds latency only where writes overlap, and
at most ``interval``. Every message is still durable before anyone is told
about it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

MAX_INTERVAL = 0.1  # seconds: more would be a visible delay, for little more saving


class CommitPacer:
    """Decides when the writer may start its next commit.

    The SQLite writer thread asks ``delay()`` and sleeps itself; the
    PostgreSQL writer task awaits ``wait_turn()``. Either way ``started()``
    marks the moment a commit begins.
    """

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 <= interval <= MAX_INTERVAL:
            raise ValueError(f"the commit interval must be between 0 and {MAX_INTERVAL} s")
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._last_start = float("-inf")
        self._streaming = False

    def delay(self) -> float:
        """Seconds to wait before the next commit may start (0: now)."""
        if not self.interval or not self._streaming:
            return 0.0
        return max(0.0, self._last_start + self.interval - self._clock())

    def started(self) -> None:
        """A commit starts now."""
        self._last_start = self._clock()

    def finished(self, writes: int, more_waiting: bool) -> None:
        """A commit of ``writes`` writes ended; ``more_waiting``: others arrived while it ran.

        Either means writes overlap (a stream): the next commit is paced.
        Neither means one writer at a time, which pacing would only slow down.
        """
        self._streaming = writes > 1 or more_waiting

    async def wait_turn(self, hurry: bool = False) -> None:
        """Return when the next commit may start; ``hurry`` (closing) skips the wait."""
        delay = 0.0 if hurry else self.delay()
        if delay > 0:
            await self._sleep(delay)
        self.started()

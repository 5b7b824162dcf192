"""Closed connections are freed by the cyclic garbage collector: collect them in proportion.

A closed ``websockets`` connection is a web of reference cycles (the
connection and its logger adapter, the protocol and its parser generator, the
transport and its protocol, the exception that ended it and its traceback):
reference counting never frees it, only a *full* collection does, because by
the time a connection closes it has long been promoted to the oldest
generation. CPython runs a full collection only once the objects promoted
since the last one exceed a quarter of the oldest generation — about 1,000
dropped connections on a server of 200 — and until then every dead
connection's memory stays allocated; afterwards the allocator keeps the pages.
So under churn RSS climbed for the first ten minutes or so by that much
garbage (issue 17's long run: +5 MiB), which looked like a leak.

``ClosedConnections`` runs a full collection once a quarter as many
connections as are open have closed (at least ``MIN_CLOSED``), at most once
every ``MIN_INTERVAL`` seconds: the garbage stays in proportion to the
connections that made it. A full collection pauses the loop in proportion to
the live objects (65–85 ms for 225,000 on the shared development VM, about
a server of 200 connections) and now runs a few times as often as CPython's
own rule would run it, never in a storm.

``freeze_startup`` takes what start-up built (modules, tables, settings:
45,000 objects in a fresh server, 25–35 ms of every full collection on the
development VM) out of the collector's reach, so each collection costs in
proportion to the connections and rooms alone.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_CLOSED = 64  # closed connections before a collection, whatever the number open
SHARE_OF_OPEN = 0.25  # ...or this share of the connections still open, if more
MIN_INTERVAL = 10.0  # seconds between two collections at most


def freeze_startup() -> int:
    """Collect start-up's garbage, then freeze what is left; returns how many objects are frozen.

    Frozen objects are never examined again by the cyclic collector (they are
    still freed by reference counting). Everything alive once the server is
    listening lives as long as the process, so examining it at every full
    collection was pure pause. Collecting first keeps start-up's own garbage
    from being frozen with it.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


_watching: list[Callable[[str, dict[str, int]], None]] = []


def watch_pauses(observe: Callable[[int, float], None]) -> None:
    """Call ``observe(generation, seconds)`` after every collection (once per process).

    The whole process stops while the collector runs: a pause of tens of
    milliseconds shows up as every client's latency at once, and an
    operator reading a p99 spike needs to know whether it was this.
    """
    if _watching:
        return
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            observe(info["generation"], time.perf_counter() - started[0])

    _watching.append(callback)
    gc.callbacks.append(callback)


class ClosedConnections:
    """Counts closed connections and runs a full garbage collection in proportion."""

    def __init__(
        self,
        collect: Callable[[], object] = gc.collect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collect = collect
        self._clock = clock
        self._closed = 0
        self._last = clock()
        self.collections = 0

    def closed(self, still_open: int) -> None:
        """One connection closed (``still_open`` remain): collect if enough have."""
        self._closed += 1
        due = max(MIN_CLOSED, SHARE_OF_OPEN * still_open)
        if self._closed < due or self._clock() - self._last < MIN_INTERVAL:
            return
        started = self._clock()
        found = self._collect()
        self._closed, self._last = 0, self._clock()
        self.collections += 1
        log.debug(
            "collected the garbage of closed connections: %s objects in %.0f ms",
            found,
            (self._last - started) * 1000,
        )

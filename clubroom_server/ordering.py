"""Per-room in-order delivery for a cluster: hold back, fill gaps, drop duplicates.

Every stored message carries its room's dense sequence number (1, 2, 3… in
commit order; the store guarantees it). On one node, events reach the
registry in that order by construction. In a cluster they arrive from
several places — this node's own commits, other nodes over the bus, reads
from the database — and the bus may reorder or lose some. ``OrderedDelivery``
turns that into exactly-once, in-order delivery per room:

- a message whose predecessor has not arrived is held back;
- if the gap is still open after ``gap_wait`` (tens of milliseconds), the
  source that may still bring it is asked to catch up (``settle``: the bus
  hands over all it had queued, at most ``SETTLE_WAIT``), and only if the
  gap is open after that are the missing messages read from the database
  through ``fetch_after``. On a busy node the late message is mostly already
  in the bus's socket, unread; reading the database for it would add load
  exactly when the node has least to spare;
- anything at or below what was already delivered is a duplicate, dropped;
- after the bus reconnects (``resync``), every room is re-read after the
  last message it delivered, because a subscriber may have missed messages
  with nothing after them to reveal the gap.

Each room starts *unanchored*: it buffers until ``anchor`` says which
message (sequence number and id) the room had reached when this node started
serving it (read after the bus subscription was active, so nothing can slip
between). Reads go by message id — within a room id order is seq order — so
the store needs no query by ``seq``.

No network or database code here: the clock and the fetch are injected, so
the rules are tested by advancing a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

GAP_WAIT = 0.03  # seconds a gap may stay open before the bus, then the database, is asked
SETTLE_WAIT = 0.03  # seconds the bus may take to catch up before the database is read anyway
RETRY_WAIT = 0.5  # seconds before a failed fetch is tried again
RETRY_WAIT_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Sequenced:
    """One stored message's event, tagged with its place in the room."""

    seq: int
    message_id: int
    data: bytes


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The one thing taken from the event loop, so tests can advance time."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The running event loop's clock."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


# (room id, message id) -> the room's messages after it, in order, and whether more follow.
FetchAfter = Callable[[int, int], Awaitable[tuple[Sequence[Sequenced], bool]]]
Deliver = Callable[[int, Sequenced], None]
Settle = Callable[[], Awaitable[None]]


async def _settled() -> None:
    return None


@dataclass(slots=True)
class OrderStats:
    """What in-order delivery had to do, for the metrics (plain ints: one loop bumps them).

    Held-back messages are normal on a cluster (two nodes commit to a room a
    moment apart and publish in the other order); late gaps cost latency
    (each waited ``gap_wait``), and database reads cost the database.
    """

    held_back: int = 0  # messages that arrived before their predecessor
    late: int = 0  # gaps still open after gap_wait
    closed_by_bus: int = 0  # ...that the bus closed once asked to catch up
    database_reads: int = 0  # reads of missing messages (late gaps and resyncs)


@dataclass(eq=False)
class _RoomOrder:
    delivered: int | None = None  # the last seq delivered; None until anchored
    delivered_id: int = 0  # ...and its message id, where the next read starts
    pending: dict[int, Sequenced] = field(default_factory=dict)
    timer: TimerHandle | None = None
    filling: bool = False
    refill: bool = False  # a resync arrived while a fill was running
    retry_wait: float = RETRY_WAIT


class OrderedDelivery:
    """Delivers each tracked room's messages once, in sequence order, whatever their source."""

    def __init__(
        self,
        deliver: Deliver,
        fetch_after: FetchAfter,
        clock: Clock | None = None,
        gap_wait: float = GAP_WAIT,
        settle: Settle = _settled,
    ) -> None:
        self._deliver = deliver
        self._fetch_after = fetch_after
        self._settle = settle
        self._clock = clock or LoopClock()
        self.gap_wait = gap_wait
        self._rooms: dict[int, _RoomOrder] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = OrderStats()

    # ------------------------------------------------------------ tracking

    def track(self, room_id: int) -> None:
        """Start buffering a room's messages (before its anchor is known)."""
        self._rooms.setdefault(room_id, _RoomOrder())

    def anchor(self, room_id: int, last_seq: int, last_id: int) -> None:
        """Everything up to message ``last_id`` (``last_seq``) was stored before we served the room.

        Buffered messages at or below it are dropped; later ones are
        delivered (or wait for a gap fill). Anchoring twice keeps the first.
        """
        order = self._rooms.setdefault(room_id, _RoomOrder())
        if order.delivered is not None:
            return
        order.delivered, order.delivered_id = last_seq, last_id
        self._drain(room_id, order)

    def forget(self, room_id: int) -> None:
        """Stop serving a room (no member here any more, or it was deleted)."""
        order = self._rooms.pop(room_id, None)
        if order is not None and order.timer is not None:
            order.timer.cancel()

    def tracking(self, room_id: int) -> bool:
        return room_id in self._rooms

    def last_delivered(self, room_id: int) -> int | None:
        """The last sequence number delivered for the room (None: not tracked or anchored)."""
        order = self._rooms.get(room_id)
        return order.delivered if order is not None else None

    # ------------------------------------------------------------ arrivals

    def offer(self, room_id: int, item: Sequenced) -> None:
        """A message from anywhere: deliver it when its turn comes, drop it if seen."""
        order = self._rooms.get(room_id)
        if order is None:
            return
        if order.delivered is not None and item.seq <= order.delivered:
            return
        if item.seq in order.pending:
            return
        order.pending[item.seq] = item
        if order.delivered is not None:
            if item.seq != order.delivered + 1:
                self.stats.held_back += 1
            self._drain(room_id, order)

    def resync(self) -> None:
        """The bus was lost and regained: re-read every anchored room after what it delivered."""
        for room_id, order in self._rooms.items():
            if order.delivered is not None:
                self._start_fill(room_id, order)

    def close(self) -> None:
        """Cancel the timers (shutdown); fills in flight finish on their own."""
        for order in self._rooms.values():
            if order.timer is not None:
                order.timer.cancel()
        self._rooms.clear()

    # ------------------------------------------------------------- internals

    def _drain(self, room_id: int, order: _RoomOrder) -> None:
        """Deliver the run that continues ``delivered``; arm the gap timer if one is open."""
        assert order.delivered is not None
        for seq in [s for s in order.pending if s <= order.delivered]:
            del order.pending[seq]
        while (item := order.pending.pop(order.delivered + 1, None)) is not None:
            order.delivered, order.delivered_id = item.seq, item.message_id
            self._deliver(room_id, item)
        if not order.pending:
            if order.timer is not None:
                order.timer.cancel()
                order.timer = None
            order.retry_wait = RETRY_WAIT
        elif order.timer is None and not order.filling:
            order.timer = self._clock.call_later(
                self.gap_wait, lambda: self._gap_timeout(room_id, order)
            )

    def _gap_timeout(self, room_id: int, order: _RoomOrder) -> None:
        order.timer = None
        if self._rooms.get(room_id) is order and order.pending:
            self.stats.late += 1
            log.debug("room %d: seq %s is late", room_id, (order.delivered or 0) + 1)
            self._start_fill(room_id, order, settle_first=True)

    def _start_fill(self, room_id: int, order: _RoomOrder, settle_first: bool = False) -> None:
        if order.filling:
            order.refill = True
            return
        if order.timer is not None:
            order.timer.cancel()
            order.timer = None
        order.filling = True
        task = asyncio.get_running_loop().create_task(self._fill(room_id, order, settle_first))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _caught_up(self, room_id: int, order: _RoomOrder) -> bool:
        """Let the bus hand over what it holds; True if that closed every gap of the room.

        Offers made meanwhile are delivered as they come (``filling`` only
        keeps a second timer from being armed).
        """
        try:
            async with asyncio.timeout(SETTLE_WAIT):
                await self._settle()
        except TimeoutError:
            pass
        except Exception as exc:  # the bus is in trouble: the database decides
            log.debug("the bus could not catch up: %s", exc)
        closed = self._rooms.get(room_id) is order and not order.pending and not order.refill
        if closed:
            self.stats.closed_by_bus += 1
            log.debug("room %d: the bus brought what was late", room_id)
        return closed

    async def _fill(self, room_id: int, order: _RoomOrder, settle_first: bool = False) -> None:
        """Read the room after what was delivered until no gap is left (or the room is gone).

        ``settle_first`` (a gap timed out): first let the bus catch up, and
        read nothing if that closed the gap. A resync always reads.
        """
        failed = False
        try:
            if settle_first and await self._caught_up(room_id, order):
                return
            while self._rooms.get(room_id) is order and order.delivered is not None:
                order.refill = False
                before = order.delivered
                self.stats.database_reads += 1
                items, more = await self._fetch_after(room_id, order.delivered_id)
                if self._rooms.get(room_id) is not order:
                    return
                for item in items:
                    self.offer(room_id, item)
                if more and order.delivered > before:
                    continue
                if not order.refill:
                    break
        except Exception as exc:  # the database is down: try again later, lose nothing
            log.warning("reading room %d's missing messages failed: %s", room_id, exc)
            failed = True
        finally:
            order.filling = False
        if self._rooms.get(room_id) is not order:
            return
        if failed:
            self._retry_later(room_id, order)
        elif order.pending:
            # Still a gap the database could not fill (e.g. a read replica behind):
            # wait again rather than deliver out of order.
            self._retry_later(room_id, order)

    def _retry_later(self, room_id: int, order: _RoomOrder) -> None:
        wait, order.retry_wait = order.retry_wait, min(order.retry_wait * 2, RETRY_WAIT_MAX)
        if order.timer is not None:
            order.timer.cancel()
        order.timer = self._clock.call_later(wait, lambda: self._retry(room_id, order))

    def _retry(self, room_id: int, order: _RoomOrder) -> None:
        order.timer = None
        if self._rooms.get(room_id) is order:
            self._start_fill(room_id, order)

    async def wait_idle(self) -> None:
        """Wait for the fills in flight (tests and orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

"""Per-room in-order delivery, driven with a fake clock and an in-memory fetch."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from clubroom_server.ordering import GAP_WAIT, OrderedDelivery, OrderStats, Sequenced
from tests.waiting import wait_until

ROOM = 7


@dataclass
class FakeTimer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    """Time that moves only when the test says so."""

    now: float = 0.0
    timers: list[FakeTimer] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    async def advance(self, seconds: float) -> None:
        """Fire every timer due by then, and let the fills they start run."""
        self.now += seconds
        for timer in sorted(self.timers, key=lambda t: t.due):
            if timer.due <= self.now and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()
        for _ in range(5):
            await asyncio.sleep(0)


class Database:
    """The room's stored messages, as the store would return them after a sequence number."""

    def __init__(self) -> None:
        self.stored: list[Sequenced] = []
        self.fetches: list[int] = []
        self.down = False
        self.page = 100

    def store(self, count: int) -> list[Sequenced]:
        start = len(self.stored)
        items = [item(seq) for seq in range(start + 1, start + count + 1)]
        self.stored.extend(items)
        return items

    async def fetch_after(self, room_id: int, after_id: int) -> tuple[Sequence[Sequenced], bool]:
        assert room_id == ROOM
        self.fetches.append(after_id)
        if self.down:
            raise OSError("connection refused")
        after = [i for i in self.stored if i.message_id > after_id]
        return after[: self.page], len(after) > self.page


def item(seq: int) -> Sequenced:
    """Message ``seq`` of the room; ids grow with seq but are not dense (other rooms')."""
    return Sequenced(seq, 100 + 3 * seq, b"m%d" % seq)


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.db = Database()
        self.got: list[int] = []
        self.unread: list[Sequenced] = []  # in the bus's socket, not handed over yet
        self.bus_stuck = False  # the bus never says it caught up
        self.settles = 0
        self.order = OrderedDelivery(
            lambda room, i: self.got.append(i.seq),
            self.db.fetch_after,
            self.clock,
            settle=self.settle,
        )

    async def settle(self) -> None:
        """The bus catching up: what it held unread is offered, then it returns."""
        self.settles += 1
        if self.bus_stuck:
            await asyncio.Event().wait()
        unread, self.unread = self.unread, []
        for i in unread:
            self.order.offer(ROOM, i)


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.order.anchor(ROOM, 0, 0)
    return harness


async def test_in_order_messages_are_delivered_at_once(h: Harness) -> None:
    """Messages that arrive in sequence order go out immediately, no database read."""
    for i in h.db.store(3):
        h.order.offer(ROOM, i)
    assert h.got == [1, 2, 3] and h.db.fetches == []


async def test_a_message_waits_for_its_predecessor(h: Harness) -> None:
    """Two nodes publishing out of order: 2 is held until 1 arrives, then both go out in order."""
    one, two = h.db.store(2)
    h.order.offer(ROOM, two)
    assert h.got == []
    await h.clock.advance(GAP_WAIT / 2)
    h.order.offer(ROOM, one)
    assert h.got == [1, 2]
    await h.clock.advance(GAP_WAIT)
    assert h.db.fetches == []
    assert h.order.stats == OrderStats(held_back=1)  # what the metrics report


async def test_a_lost_message_is_read_from_the_database_after_the_wait(h: Harness) -> None:
    """A gap still open after the short wait is filled from the database, in order."""
    one, _, three = h.db.store(3)
    h.order.offer(ROOM, one)
    h.order.offer(ROOM, three)
    await h.clock.advance(GAP_WAIT * 0.9)
    assert h.got == [1] and h.db.fetches == []
    await h.clock.advance(GAP_WAIT * 0.2)
    assert h.got == [1, 2, 3] and h.db.fetches == [item(1).message_id]


async def test_a_late_message_still_unread_on_the_bus_is_not_read_from_the_database(
    h: Harness,
) -> None:
    """A busy node: 2 is in the bus's socket when the wait ends. The bus catches up and
    delivers it; the database is not asked."""
    one, two, three = h.db.store(3)
    h.order.offer(ROOM, one)
    h.order.offer(ROOM, three)
    h.unread.append(two)
    await h.clock.advance(GAP_WAIT)
    assert h.settles == 1
    assert h.got == [1, 2, 3] and h.db.fetches == []
    assert h.order.stats == OrderStats(held_back=1, late=1, closed_by_bus=1)


async def test_a_gap_the_bus_does_not_close_is_read_from_the_database(h: Harness) -> None:
    """The bus caught up and 2 is still missing (Redis dropped it): the database has it."""
    one, _, three = h.db.store(3)
    h.order.offer(ROOM, one)
    h.order.offer(ROOM, three)
    await h.clock.advance(GAP_WAIT)
    assert h.settles == 1
    assert h.got == [1, 2, 3] and h.db.fetches == [item(1).message_id]
    assert h.order.stats == OrderStats(held_back=1, late=1, database_reads=1)


async def test_a_bus_that_does_not_catch_up_only_delays_the_read(h: Harness) -> None:
    """No answer from the bus (a dead connection not noticed yet): the database is read
    after a short bounded wait all the same."""
    one, _, three = h.db.store(3)
    h.order.offer(ROOM, one)
    h.order.offer(ROOM, three)
    h.bus_stuck = True
    await h.clock.advance(GAP_WAIT)
    await wait_until(lambda: h.got == [1, 2, 3])
    assert h.db.fetches == [item(1).message_id]


async def test_a_resync_reads_the_database_without_asking_the_bus(h: Harness) -> None:
    """After a reconnect the bus cannot know what it missed: the read is not skipped."""
    h.db.store(2)
    h.order.resync()
    await h.clock.advance(0)
    assert h.got == [1, 2] and h.settles == 0


async def test_duplicates_are_dropped(h: Harness) -> None:
    """The same message from the bus and from this node's commit is delivered once."""
    one, two = h.db.store(2)
    for i in (one, one, two, one, two):
        h.order.offer(ROOM, i)
    assert h.got == [1, 2]


async def test_messages_before_the_anchor_are_not_delivered() -> None:
    """Buffered while unanchored, then anchored at 2: only 3 and later go out."""
    h = Harness()
    h.db.store(4)
    h.order.track(ROOM)
    for i in h.db.stored[1:]:
        h.order.offer(ROOM, i)
    assert h.got == []
    h.order.anchor(ROOM, 2, item(2).message_id)
    assert h.got == [3, 4]


async def test_an_untracked_room_is_ignored(h: Harness) -> None:
    """Events of a room this node does not serve cost nothing and deliver nothing."""
    h.order.offer(ROOM + 1, item(1))
    assert h.got == [] and not h.order.tracking(ROOM + 1)


async def test_resync_reads_everything_after_the_last_delivered(h: Harness) -> None:
    """After the bus comes back, messages missed with nothing after them are read and delivered."""
    first = h.db.store(2)
    for i in first:
        h.order.offer(ROOM, i)
    h.db.store(3)  # published while the bus was down: nobody heard them
    h.order.resync()
    await h.clock.advance(0)
    assert h.got == [1, 2, 3, 4, 5] and h.db.fetches == [item(2).message_id]


async def test_a_long_gap_is_read_page_by_page(h: Harness) -> None:
    """A fill continues while the database says more, so a large backlog arrives whole."""
    h.db.page = 2
    h.db.store(7)
    h.order.resync()
    await h.clock.advance(0)
    assert h.got == list(range(1, 8))
    assert h.db.fetches == [0, *(item(seq).message_id for seq in (2, 4, 6))]


async def test_a_failed_fill_is_retried_and_loses_nothing(h: Harness) -> None:
    """Database down during a fill: the gap stays held, and is filled once it is back."""
    one, _, three = h.db.store(3)
    h.order.offer(ROOM, one)
    h.order.offer(ROOM, three)
    h.db.down = True
    await h.clock.advance(GAP_WAIT)
    assert h.got == [1]
    h.db.down = False
    await h.clock.advance(1.0)
    assert h.got == [1, 2, 3]


async def test_a_forgotten_room_delivers_nothing_more(h: Harness) -> None:
    """A deleted room's held messages and timers are dropped with it."""
    three = h.db.store(3)[2]
    h.order.offer(ROOM, three)
    h.order.forget(ROOM)
    await h.clock.advance(1.0)
    assert h.got == [] and h.db.fetches == []


async def test_every_arrival_order_delivers_each_once_in_order() -> None:
    """Any interleaving of duplicates and reorderings still yields 1..n exactly once."""
    rng = random.Random(13)
    for _ in range(200):
        h = Harness()
        h.order.anchor(ROOM, 0, 0)
        items = h.db.store(rng.randint(1, 12))
        arrivals = [i for i in items if rng.random() > 0.2] * rng.randint(1, 2)
        rng.shuffle(arrivals)
        for i in arrivals:
            h.order.offer(ROOM, i)
        await h.clock.advance(GAP_WAIT)
        h.order.resync()  # the trailing loss case: nothing after it to reveal the gap
        await h.clock.advance(0)
        assert h.got == [i.seq for i in items]

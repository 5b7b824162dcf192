"""The Redis bus between nodes, against a real Redis (shared, or private when restarted)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis

from clubroom_server.bus import BusEvent, LocalBus, RedisBus, decode_event, encode_event
from tests.redisserver import RedisServer
from tests.services import redis_url
from tests.waiting import wait_until


class Node:
    """A bus and what it received."""

    def __init__(self, bus: RedisBus) -> None:
        self.bus = bus
        self.events: list[BusEvent] = []
        self.resyncs = 0

    def _resync(self) -> None:
        self.resyncs += 1

    async def start(self) -> None:
        await self.bus.start(self.events.append, self._resync)


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    """Bus nodes on one private channel prefix, closed at the end."""
    nodes: list[Node] = []
    prefix = f"test-{uuid.uuid4().hex[:12]}"

    async def make(url: str | None = None, name: str | None = None) -> Node:
        node = Node(RedisBus(url or redis_url(), name or f"n{len(nodes)}", prefix))
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.bus.close()


def message(room: int, seq: int, origin: str = "a") -> BusEvent:
    return BusEvent(room, seq, 1000 + seq, b'{"type":"message"}', origin)


def test_an_event_survives_encoding() -> None:
    """The payload carries room, seq, id, origin and the frame bytes unchanged."""
    event = BusEvent(3, 7, 70, b"frame\nwith newline", "host-1-ab")
    assert decode_event(encode_event(event)) == event


async def test_the_local_bus_does_nothing() -> None:
    """One process: publishing and subscribing cost nothing and the bus is always healthy."""
    bus = LocalBus()
    await bus.start(lambda e: None, lambda: None)
    bus.publish(message(1, 1))
    await bus.subscribe(1)
    assert bus.healthy and not bus.clustered


async def test_a_subscribed_node_receives_what_another_publishes(make_node: MakeNode) -> None:
    """Publishing right after subscribe returns is heard: the subscription is already active."""
    a, b = await make_node(name="a"), await make_node(name="b")
    await b.bus.subscribe(5)
    for seq in (1, 2, 3):
        a.bus.publish(message(5, seq))
    await wait_until(lambda: len(b.events) == 3)
    assert [e.seq for e in b.events] == [1, 2, 3]
    assert a.events == []  # not subscribed to room 5


async def test_a_node_ignores_its_own_presence_news(make_node: MakeNode) -> None:
    """Unsequenced events from this node were delivered locally; messages come back for dedupe."""
    a = await make_node(name="a")
    await a.bus.subscribe(5)
    a.bus.publish(BusEvent(5, 0, 0, b"joined", "a"))
    a.bus.publish(message(5, 1, origin="a"))
    await wait_until(lambda: len(a.events) == 1)
    assert a.events[0].seq == 1


async def test_caught_up_returns_after_everything_redis_had_is_handed_over(
    make_node: MakeNode,
) -> None:
    """Once Redis has taken a burst, ``caught_up`` returns only after the subscriber handed
    every event of it over: a gap still open then is not on the bus.

    The burst is published with a blocking client, so this event loop (and
    the subscriber on it) has read none of it when ``caught_up`` is called.
    """
    b = await make_node(name="b")
    await b.bus.subscribe(5)
    burst = 500
    with redis.Redis.from_url(redis_url()) as publisher, publisher.pipeline() as pipe:
        for seq in range(1, burst + 1):
            pipe.publish(b.bus.channel(5), encode_event(message(5, seq)))
        pipe.execute()
    assert b.events == []
    async with asyncio.timeout(10):  # awaited in this task: no turn of the loop before it
        await b.bus.caught_up()
    assert [event.seq for event in b.events] == list(range(1, burst + 1))


async def test_caught_up_does_not_wait_for_a_bus_that_is_down(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """Redis gone: there is nothing to catch up with, the database decides at once."""
    redis = RedisServer(tmp_path)
    await redis.start()
    try:
        b = await make_node(redis.url, "b")
        await b.bus.subscribe(5)
        await redis.stop()
        await wait_until(lambda: not b.bus.healthy)
        await asyncio.wait_for(b.bus.caught_up(), 1)
    finally:
        await redis.stop()


async def test_unsubscribed_rooms_are_not_heard(make_node: MakeNode) -> None:
    """After unsubscribe, a room's events no longer reach the node."""
    a, b = await make_node(name="a"), await make_node(name="b")
    await b.bus.subscribe(5)
    await b.bus.subscribe(6)
    b.bus.unsubscribe(5)
    await asyncio.sleep(0)
    a.bus.publish(message(5, 1))
    a.bus.publish(message(6, 1))
    await wait_until(lambda: len(b.events) == 1)
    assert b.events[0].room_id == 6


async def test_a_room_left_and_joined_again_at_once_stays_subscribed(
    make_node: MakeNode,
) -> None:
    """Unsubscribe then subscribe straight away: the later wish wins, events keep coming."""
    a, b = await make_node(name="a"), await make_node(name="b")
    await b.bus.subscribe(5)
    b.bus.unsubscribe(5)
    await b.bus.subscribe(5)
    a.bus.publish(message(5, 1))
    await wait_until(lambda: [e.seq for e in b.events] == [1])


async def test_a_redis_restart_is_survived_and_reported(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """Redis restarts: the bus says unhealthy, reconnects, resubscribes, signals a resync, and
    sends what was published meanwhile."""
    redis = RedisServer(tmp_path)
    await redis.start()
    try:
        a = await make_node(redis.url, "a")
        b = await make_node(redis.url, "b")
        await b.bus.subscribe(9)
        await redis.stop()
        await wait_until(lambda: not b.bus.healthy)
        a.bus.publish(message(9, 1))  # kept, and sent once Redis is back
        await redis.start()
        # Whether b hears 1 depends on who reconnects first: pub/sub promises
        # nothing there, which is why b is told to resync (re-read the database).
        await wait_until(lambda: b.bus.healthy and b.resyncs == 1, within=15)
        await wait_until(lambda: a.bus.healthy and not a.bus.unpublished, within=15)
        a.bus.publish(message(9, 2))
        await wait_until(lambda: [e.seq for e in b.events][-1:] == [2])
        assert [e.seq for e in b.events] in ([2], [1, 2])
    finally:
        await redis.stop()

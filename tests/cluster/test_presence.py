"""Cluster presence on a real PostgreSQL: joins, leaves, the last-leave lock, leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from clubroom_server.store.presence import ClusterPresence, NodeLapsed, Reaped
from tests.cluster.databases import apply_schema, fresh_postgres

LEASE = 0.3  # seconds: short, so expiry is observable quickly
GRACE = 0.3


@pytest.fixture
async def db() -> AsyncIterator[str]:
    async with fresh_postgres() as url:
        await apply_schema(url)
        yield url


MakeNode = Callable[[str], Awaitable[ClusterPresence]]


@pytest.fixture
async def node(db: str) -> AsyncIterator[MakeNode]:
    """Presence handles of named nodes on the test database, each with a long lease."""
    nodes: list[ClusterPresence] = []

    async def make(name: str) -> ClusterPresence:
        presence = ClusterPresence(db, name)
        await presence.open()
        await presence.register(lease=60, grace=GRACE)
        nodes.append(presence)
        return presence

    yield make
    for presence in nodes:
        await presence.close()


async def add_room(url: str, name: str = "Lobby", messages: int = 2) -> int:
    conn = await asyncpg.connect(url)
    try:
        room_id = await conn.fetchval(
            "INSERT INTO rooms (name, key, created_ms) VALUES ($1, lower($1), 0) RETURNING id", name
        )
        user_id = await conn.fetchval(
            "INSERT INTO users (username, key, password_hash, created_ms) "
            "VALUES ('w', 'w', 'x', 0) ON CONFLICT (key) DO UPDATE SET key = 'w' RETURNING id"
        )
        for seq in range(1, messages + 1):
            await conn.execute(
                "INSERT INTO messages (room_id, seq, author_id, author, text, at_ms) "
                "VALUES ($1, $2, $3, 'w', 'hi', 0)",
                room_id,
                seq,
                user_id,
            )
        return int(room_id)
    finally:
        await conn.close()


async def stored(url: str, room_id: int) -> tuple[bool, int]:
    """Whether the room row exists, and how many message rows it has."""
    conn = await asyncpg.connect(url)
    try:
        room = await conn.fetchval("SELECT count(*) FROM rooms WHERE id = $1", room_id)
        count = await conn.fetchval("SELECT count(*) FROM messages WHERE room_id = $1", room_id)
        return bool(room), int(count)
    finally:
        await conn.close()


async def reap_until(presence: ClusterPresence, count: int) -> list[Reaped]:
    """Reap until ``count`` rooms were reaped: the database's clock decides when."""
    reaped: list[Reaped] = []
    async with asyncio.timeout(10):
        while len(reaped) < count:
            reaped.extend(await presence.reap(GRACE))
            await asyncio.sleep(0.05)
    return reaped


async def test_the_last_leave_deletes_the_room_and_its_messages(db: str, node: MakeNode) -> None:
    """One member joins and leaves: the room and every message row are gone."""
    a = await node("a")
    room = await add_room(db)
    joined = await a.join(room, "ann", "Ann")
    assert joined is not None and joined.new_member and joined.members == ["Ann"]
    left = await a.leave(room, "ann")
    assert left.user_left and left.room_deleted
    assert await stored(db, room) == (False, 0)


async def test_a_user_on_two_nodes_is_one_member(db: str, node: MakeNode) -> None:
    """Joined through two nodes: announced once, listed once, leaves only when both let go."""
    a, b = await node("a"), await node("b")
    room = await add_room(db)
    first, second = await a.join(room, "ann", "Ann"), await b.join(room, "ann", "Ann")
    assert first is not None and first.new_member
    assert second is not None and not second.new_member and second.members == ["Ann"]
    assert (await a.leave(room, "ann")).user_left is False
    assert await stored(db, room) == (True, 2)
    last = await b.leave(room, "ann")
    assert last.user_left and last.room_deleted


async def test_a_leave_with_others_inside_keeps_the_room(db: str, node: MakeNode) -> None:
    """Bob still inside on another node: Ann's leave is announced, the room stays."""
    a, b = await node("a"), await node("b")
    room = await add_room(db)
    await a.join(room, "ann", "Ann")
    await b.join(room, "bob", "Bob")
    assert await a.members(room) == ["Ann", "Bob"]
    left = await a.leave(room, "ann")
    assert left.user_left and not left.room_deleted
    assert await b.members(room) == ["Bob"] and await stored(db, room) == (True, 2)


async def test_a_join_after_the_last_leave_finds_the_room_gone(db: str, node: MakeNode) -> None:
    """A join that loses the race to the last leave is told the room does not exist."""
    a, b = await node("a"), await node("b")
    room = await add_room(db)
    await a.join(room, "ann", "Ann")
    await a.leave(room, "ann")
    assert await b.join(room, "bob", "Bob") is None


async def test_concurrent_last_leave_and_join_never_lose_a_member(db: str, node: MakeNode) -> None:
    """Many races of A's last leave against B's join: never a deleted room with a member
    inside, never an empty room that survives."""
    a, b = await node("a"), await node("b")
    for _ in range(40):
        room = await add_room(db)
        await a.join(room, "ann", "Ann")
        left, joined = await asyncio.gather(a.leave(room, "ann"), b.join(room, "bob", "Bob"))
        exists, _ = await stored(db, room)
        if joined is None:  # the leave won: the room went, and Bob was told so
            assert left.room_deleted and not exists
        else:  # the join won: Bob is inside a room that still exists
            assert not left.room_deleted and exists and "Bob" in joined.members
            assert await b.members(room) == ["Bob"]
            assert (await b.leave(room, "bob")).room_deleted
            assert await stored(db, room) == (False, 0)


async def test_a_dead_nodes_members_leave_after_lease_and_grace(db: str, node: MakeNode) -> None:
    """A node stops renewing: after its lease and the grace, its members leave; rooms with
    members elsewhere stay, rooms with only its members go."""
    b = await node("b")
    dying = ClusterPresence(db, "dying")
    await dying.open()
    try:
        await dying.register(lease=60, grace=GRACE)
        only, shared = await add_room(db, "Only"), await add_room(db, "Shared")
        await dying.join(only, "ann", "Ann")
        await dying.join(shared, "ann", "Ann")
        await b.join(shared, "bob", "Bob")
        await dying.renew(LEASE, GRACE)  # its last renewal: the lease ends soon after
    finally:
        await dying.close()  # like kill -9: no retire, the lease just runs out
    assert await b.reap(GRACE) == []  # lease still valid
    reaped = await reap_until(b, 2)
    by_room = {r.room_id: r for r in reaped}
    assert by_room[only].left == ["Ann"] and by_room[only].room_deleted
    assert by_room[shared].left == ["Ann"] and not by_room[shared].room_deleted
    assert await b.members(shared) == ["Bob"]
    assert await stored(db, only) == (False, 0)


async def test_a_restarted_node_does_not_resurrect_stale_presence(db: str, node: MakeNode) -> None:
    """Same id after a crash: the old rows wait out one grace and go unless rejoined."""
    b = await node("b")
    first = ClusterPresence(db, "a")
    await first.open()
    await first.register(lease=60, grace=GRACE)
    room = await add_room(db)
    await first.join(room, "ann", "Ann")
    await first.join(room, "bob", "Bob")
    await first.close()  # crash
    again = ClusterPresence(db, "a")
    await again.open()
    try:
        await again.register(lease=60, grace=GRACE)  # the restart: old rows enter grace
        rejoined = await again.join(room, "bob", "Bob")  # Bob reconnects in time
        assert rejoined is not None and not rejoined.new_member
        reaped = await reap_until(b, 1)
        assert reaped[0].left == ["Ann"] and not reaped[0].room_deleted
        assert await b.members(room) == ["Bob"]
    finally:
        await again.close()


async def test_a_node_whose_lease_lapsed_records_nothing_until_it_renews(
    db: str, node: MakeNode
) -> None:
    """A stalled node (no renewal for lease + grace) may have lost its members to a reaper:
    its joins are refused, and its next renewal reports the lapse (the node then fences)."""
    b = await node("b")
    stalled = ClusterPresence(db, "stalled")
    await stalled.open()
    try:
        await stalled.register(lease=LEASE, grace=GRACE)
        room = await add_room(db)
        await stalled.join(room, "ann", "Ann")
        await b.join(room, "bob", "Bob")
        reaped = await reap_until(b, 1)  # the stalled node's member is dropped
        assert reaped[0].left == ["Ann"]
        with pytest.raises(NodeLapsed):
            await stalled.join(room, "cat", "Cat")
        assert await b.members(room) == ["Bob"]
        assert await stalled.renew(LEASE, GRACE) is True
        assert await stalled.renew(60, GRACE) is False
        joined = await stalled.join(room, "cat", "Cat")
        assert joined is not None and joined.members == ["Bob", "Cat"]
    finally:
        await stalled.close()


async def test_rooms_nobody_holds_are_deleted_once_old_enough(db: str, node: MakeNode) -> None:
    """A room no node holds (its creator's join failed, or every node restarted) is deleted
    when older than the age given (the node passes max(60 s, grace)); a younger one, or one
    someone holds, is kept. Age is the row's creation time against the database's clock."""
    a = await node("a")
    old_unheld, old_held = await add_room(db, "Old"), await add_room(db, "Held")  # created at 0
    await a.join(old_held, "ann", "Ann")
    conn = await asyncpg.connect(db)
    try:
        young = await conn.fetchval(
            "INSERT INTO rooms (name, key, created_ms) "
            "VALUES ('Young', 'young', (extract(epoch FROM now()) * 1000)::bigint) RETURNING id"
        )
    finally:
        await conn.close()
    assert await a.reap_unjoined_rooms(60) == [old_unheld]
    assert await stored(db, old_unheld) == (False, 0)
    assert (await stored(db, old_held))[0] and (await stored(db, young))[0]

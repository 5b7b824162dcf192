"""A kick racing the kicked user's join, across nodes: no ghost member, cleanup still exact."""

from __future__ import annotations

import asyncio

import protocol
from tests.cluster.harness import ProcessCluster
from tests.cluster.test_failures import (
    cluster,  # noqa: F401 - fixtures
    db,  # noqa: F401
    on_node,
    room_exists,
)
from tests.databases import query
from tests.wsclient import WireClient

ROUNDS = 15
HISTORY = 300  # messages Bob's catch-up reads: a join slow enough to be kicked during


async def presence_of(db: str, name: str, user: str) -> int:  # noqa: F811
    rows = await query(
        db,
        "SELECT count(*) FROM presence p JOIN rooms r ON r.id = p.room_id "
        "WHERE r.key = ? AND p.user_key = ?",
        [protocol.room_key(name), user],
    )
    return int(rows[0][0])


async def settles_to(db: str, name: str, user: str, count: int) -> None:  # noqa: F811
    """Poll presence until the user's rows in the room number ``count`` (leaves are async)."""
    async with asyncio.timeout(10):
        while await presence_of(db, name, user) != count:  # noqa: ASYNC110 - no push from SQL
            await asyncio.sleep(0.05)


async def gone(db: str, name: str) -> None:  # noqa: F811
    async with asyncio.timeout(10):
        while await room_exists(db, name):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_kick_racing_a_join_leaves_no_ghost_member(
    cluster: ProcessCluster,  # noqa: F811
    clients: list[WireClient],
    db: str,  # noqa: F811
) -> None:
    """Bob (node 1) joins with a long catch-up; Ann (node 0) kicks him the moment she hears
    he joined — while his join is still reading its snapshot, or just after. Every time:
    Bob is told ``kicked`` and never ``joined`` after it, he is out everywhere (no presence
    row, cannot send), and once Ann leaves the room is deleted (no ghost keeps it)."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    await ann.ok("create_room", room="Kick")
    for i in range(HISTORY):
        await ann.ok("send", room="Kick", text=f"history {i}")
    outcomes = []
    for _ in range(ROUNDS):
        bob.arrivals.clear()

        async def kick_on_arrival() -> dict[str, object]:
            await ann.event("member_joined")
            return await ann.call("kick", room="Kick", username="bob")

        joined, kicked = await asyncio.gather(
            bob.call("join_room", room="Kick", after=0), kick_on_arrival()
        )
        assert kicked["type"] == "ok", kicked
        assert (await bob.event("kicked"))["room"] == "Kick"
        if joined["type"] == "joined":
            assert bob.arrivals.index("joined") < bob.arrivals.index("kicked")
        else:
            assert joined["code"] == "not_in_room", joined
        outcomes.append(joined["type"])
        await settles_to(db, "Kick", "bob", 0)
        assert (await bob.call("send", room="Kick", text="ghost?"))["code"] == "not_in_room"
        assert (await ann.event("member_left"))["username"] == "bob"
        bob.drain_events()
    await ann.ok("leave_room", room="Kick")
    await gone(db, "Kick")  # the last member out deleted it: no ghost row kept it
    print("join outcomes:", outcomes)

"""Edits, deletions and reactions in a cluster: one order per room, across nodes and gaps."""

from __future__ import annotations

from typing import Any

from tests.cluster.harness import ProcessCluster
from tests.cluster.test_failures import (
    FAST,
    NAMES,
    cluster,  # noqa: F401 - fixtures
    db,  # noqa: F401
    healthy_again,
    on_node,
)
from tests.redisserver import RedisServer
from tests.wsclient import WireClient


async def room_events(client: WireClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` message and message_changed events (presence news skipped)."""
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        frame = await client.event()
        if frame["type"] in ("message", "message_changed"):
            frames.append(frame)
    return frames


def story(frames: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (f["type"], f.get("change", "") + f["message"]["text"] + str(f["message"].get("reactions")))
        for f in frames
    ]


async def test_changes_reach_every_node_in_one_order(
    cluster: ProcessCluster,  # noqa: F811
    clients: list[WireClient],
) -> None:
    """A send, an edit, a reaction and a deletion on different nodes: all members, one order."""
    ann, bob, cat = [await on_node(cluster, i, n, clients) for i, n in enumerate(NAMES)]
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    await cat.ok("join_room", room="Lobby")
    first = (await ann.ok("send", room="Lobby", text="helo"))["message"]
    await ann.ok("edit", room="Lobby", message=first["id"], text="hello")
    await bob.ok("react", room="Lobby", message=first["id"], emoji="👋")
    second = (await cat.ok("send", room="Lobby", text="oops"))["message"]
    await cat.ok("delete", room="Lobby", message=second["id"])
    seen = [story(await room_events(client, 5)) for client in (ann, bob, cat)]
    assert seen[0] == seen[1] == seen[2]
    assert [kind for kind, _ in seen[0]] == [
        "message", "message_changed", "message_changed", "message", "message_changed",
    ]  # fmt: skip
    assert seen[0][2][1] == "reactedhello[{'emoji': '👋', 'count': 1}]"


async def test_changes_lost_on_the_bus_are_read_back_in_order(
    db: str,  # noqa: F811
    private_redis: RedisServer,
    clients: list[WireClient],
) -> None:
    """Changes made while Redis is down reach the other nodes from the database, in order."""
    nodes = ProcessCluster(db, private_redis.url, FAST)
    await nodes.start()
    try:
        ann, bob = [await on_node(nodes, i, n, clients) for i, n in enumerate(NAMES[:2])]
        await ann.ok("create_room", room="Lobby")
        await bob.ok("join_room", room="Lobby")
        first = (await ann.ok("send", room="Lobby", text="draft"))["message"]
        assert (await room_events(bob, 1))[0]["message"]["text"] == "draft"
        await private_redis.stop()
        await ann.ok("edit", room="Lobby", message=first["id"], text="final")
        await ann.ok("react", room="Lobby", message=first["id"], emoji="🎉")
        await private_redis.start()
        await healthy_again(nodes.ports[0])
        await healthy_again(nodes.ports[1])
        await ann.ok("send", room="Lobby", text="after")
        got = await room_events(bob, 3)
        assert [(f["type"], f.get("change")) for f in got] == [
            ("message_changed", "edited"),
            ("message_changed", "reacted"),
            ("message", None),
        ]
        assert got[1]["emoji"] == "🎉" and got[1]["message"]["text"] == "final"
        await bob.no_event()
    finally:
        await nodes.stop()

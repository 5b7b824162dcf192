"""A cluster of real ``clubroom-server serve`` processes through the failures it must survive."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import protocol
from tests.cluster.harness import ProcessCluster
from tests.databases import fresh_postgres, query
from tests.redisserver import RedisServer
from tests.services import redis_url
from tests.tui.conftest import FaultyLink
from tests.wsclient import WireClient, resumed, user

NAMES = ("ann", "bob", "cat")
FAST = ("--grace", "1", "--node-lease", "1", "--rate-limit", "0", "--room-rate-limit", "0")


@pytest.fixture
async def db() -> AsyncIterator[str]:
    async with fresh_postgres() as url:
        yield url


async def started(cluster: ProcessCluster) -> ProcessCluster:
    await cluster.start()
    return cluster


@pytest.fixture
async def cluster(db: str) -> AsyncIterator[ProcessCluster]:
    """Three nodes on a fresh database and the machine's Redis (own channels)."""
    nodes = ProcessCluster(db, redis_url(), FAST)
    try:
        yield await started(nodes)
    finally:
        await nodes.stop()


async def healthy_again(port: int) -> None:
    """Poll ``/healthz`` until it says 200 (the node recovers by itself)."""
    async with asyncio.timeout(15):
        while await asyncio.to_thread(health, port) != 200:  # noqa: ASYNC110 - HTTP has no push
            await asyncio.sleep(0.1)


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def on_node(
    cluster: ProcessCluster, index: int, name: str, opened: list[WireClient]
) -> WireClient:
    client = await user(cluster.url(index), name)
    opened.append(client)
    return client


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["message"]["text"] for f in frames if f["type"] == "message"]


async def messages(client: WireClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` message events (presence news in between is skipped)."""
    return [await client.event("message") for _ in range(count)]


async def room_exists(db: str, name: str) -> bool:
    """Is the room stored (by its key: a skeleton, so "Race0" is "raceo", not "race0")?"""
    key = protocol.room_key(name)
    return bool(await query(db, "SELECT 1 FROM rooms WHERE key = ?", [key]))


async def test_three_nodes_serve_one_room_exactly_once_in_order(
    cluster: ProcessCluster, clients: list[WireClient]
) -> None:
    """Members on three nodes see each other join and every message once, in id order."""
    ann, bob, cat = [await on_node(cluster, i, n, clients) for i, n in enumerate(NAMES)]
    await ann.ok("create_room", room="Lobby")
    joined = await bob.ok("join_room", room="Lobby")
    assert joined["members"] == ["ann", "bob"]
    assert (await ann.event("member_joined"))["username"] == "bob"
    await cat.ok("join_room", room="Lobby")
    for earlier in (ann, bob):
        assert (await earlier.event("member_joined"))["username"] == "cat"
    sent = []
    for round_ in range(5):
        for client in (ann, bob, cat):
            reply = await client.ok("send", room="Lobby", text=f"{client.username}{round_}")
            sent.append(reply["message"])
    order = [m["text"] for m in sorted(sent, key=lambda m: m["id"])]
    for client in (ann, bob, cat):
        assert texts(await messages(client, len(sent))) == order
        await client.no_event()


async def test_two_nodes_publishing_at_once_agree_on_one_order(
    cluster: ProcessCluster, clients: list[WireClient]
) -> None:
    """Concurrent senders on two nodes: every member everywhere sees the same id order."""
    ann, bob, cat = [await on_node(cluster, i, n, clients) for i, n in enumerate(NAMES)]
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    await cat.ok("join_room", room="Lobby")

    async def burst(client: WireClient) -> None:
        for i in range(30):
            await client.ok("send", room="Lobby", text=f"{client.username}{i}")

    await asyncio.gather(burst(ann), burst(bob))
    seen = [await messages(c, 60) for c in (ann, bob, cat)]
    ids = [[m["message"]["id"] for m in got] for got in seen]
    assert ids[0] == sorted(ids[0]) and len(set(ids[0])) == 60
    assert ids[0] == ids[1] == ids[2]


async def test_a_client_resumes_on_another_node(
    cluster: ProcessCluster, clients: list[WireClient]
) -> None:
    """Gone from node 0, back on node 2 with ``after``: exactly the missed messages."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    first = await bob.ok("send", room="Lobby", text="before")
    await ann.event("message")
    await ann.close()
    for text in ("one", "two"):
        await bob.ok("send", room="Lobby", text=text)
    back = await resumed(cluster.url(2), ann.token)
    clients.append(back)
    joined = await back.ok("join_room", room="Lobby", after=first["message"]["id"])
    assert [m["text"] for m in joined["messages"]] == ["one", "two"]
    await bob.ok("send", room="Lobby", text="three")
    assert texts(await messages(back, 1)) == ["three"]


async def test_a_killed_node_s_members_leave_after_lease_and_grace(
    cluster: ProcessCluster, clients: list[WireClient], db: str
) -> None:
    """kill -9 of node 0: its only-member room is deleted, the shared room keeps Bob and
    tells him Ann left."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    await ann.ok("create_room", room="Alone")
    await ann.ok("send", room="Alone", text="secret")
    await ann.ok("create_room", room="Shared")
    await bob.ok("join_room", room="Shared")
    await cluster.kill(0)
    left = await asyncio.wait_for(bob.event("member_left"), 15)
    assert left == {"type": "member_left", "room": "Shared", "username": "ann"}
    async with asyncio.timeout(15):
        while await room_exists(db, "Alone"):  # noqa: ASYNC110 - the reaper decides when
            await asyncio.sleep(0.1)
    assert await query(db, "SELECT count(*) FROM messages WHERE text = 'secret'") == [(0,)]
    assert await room_exists(db, "Shared")


async def test_sigterm_drains_a_node_and_its_clients_come_back_elsewhere(
    cluster: ProcessCluster, clients: list[WireClient], db: str
) -> None:
    """SIGTERM: clients are closed with 1012, the node exits 0, and a client that rejoins on
    another node within the grace was never seen to leave."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    await ann.event("member_joined")
    assert await cluster.terminate(1) == 0
    assert await bob.wait_closed() == 1012
    back = await resumed(cluster.url(2), bob.token)
    clients.append(back)
    joined = await back.ok("join_room", room="Lobby")
    assert joined["members"] == ["ann", "bob"]
    await ann.no_event(within=2.5)  # past lease + grace: no member_left for Bob
    assert await room_exists(db, "Lobby")


async def test_a_redis_restart_mid_burst_loses_and_repeats_nothing(
    db: str, private_redis: RedisServer, clients: list[WireClient]
) -> None:
    """Redis dies and comes back during a burst: every member receives every acknowledged
    message exactly once, in order; /healthz says 503 meanwhile and 200 after."""
    cluster = ProcessCluster(db, private_redis.url, FAST)
    await cluster.start()
    try:
        ann, bob, cat = [await on_node(cluster, i, n, clients) for i, n in enumerate(NAMES)]
        await ann.ok("create_room", room="Lobby")
        await bob.ok("join_room", room="Lobby")
        await cat.ok("join_room", room="Lobby")
        acknowledged: list[int] = []

        async def burst(client: WireClient, count: int) -> None:
            for i in range(count):
                reply = await client.call("send", room="Lobby", text=f"{client.username}{i}")
                if reply["type"] == "sent":
                    acknowledged.append(reply["message"]["id"])

        await burst(ann, 10)
        await private_redis.stop()
        await asyncio.gather(burst(ann, 10), burst(cat, 10))
        assert await asyncio.to_thread(health, cluster.ports[1]) == 503
        await private_redis.start()
        await asyncio.gather(burst(ann, 10), burst(bob, 10))
        await healthy_again(cluster.ports[1])
        assert len(acknowledged) == 50
        expected = sorted(acknowledged)
        for client in (ann, bob, cat):
            got = [m["message"]["id"] for m in await messages(client, len(expected))]
            assert got == expected
            await client.no_event()
    finally:
        await cluster.stop()


async def test_the_message_rate_is_one_budget_across_nodes(
    db: str, clients: list[WireClient]
) -> None:
    """One user connected to two nodes cannot send more than one burst between them."""
    cluster = ProcessCluster(db, redis_url(), ("--rate-limit", "0.2", "--rate-burst", "3"), nodes=2)
    await cluster.start()
    try:
        ann = await on_node(cluster, 0, "ann", clients)
        again = await resumed(cluster.url(1), ann.token)
        clients.append(again)
        await ann.ok("create_room", room="Lobby")
        await again.ok("join_room", room="Lobby")
        replies = []
        for i in range(4):
            for client in (ann, again):
                replies.append(await client.call("send", room="Lobby", text=f"m{i}"))
        kinds = [reply["type"] for reply in replies]
        assert kinds.count("sent") == 3, kinds
        refused = [reply for reply in replies if reply["type"] == "error"]
        assert {reply["code"] for reply in refused} == {"rate_limited"}
    finally:
        await cluster.stop()


@pytest.mark.parametrize("bob_node", [1, 0], ids=["other-node", "same-node"])
async def test_last_leave_on_one_node_races_a_join_on_another(
    cluster: ProcessCluster, clients: list[WireClient], db: str, bob_node: int
) -> None:
    """Ann's last leave on node 0 against Bob's join on node 1 (or on node 0 too), many
    times: Bob is either in a room that exists or told it does not; an emptied room never
    survives."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, bob_node, "bob", clients)
    for round_ in range(25):  # which side wins varies with timing; both are correct
        name = f"Race{round_}"
        await ann.ok("create_room", room=name)
        _, joined = await asyncio.gather(
            ann.ok("leave_room", room=name), bob.call("join_room", room=name)
        )
        if joined["type"] == "joined":
            assert joined["members"] in (["bob"], ["ann", "bob"])
            assert await room_exists(db, name)
            await bob.ok("leave_room", room=name)
        else:
            assert joined["code"] == "no_such_room"
        assert not await room_exists(db, name)  # the last one out deleted it


async def test_a_last_leave_during_a_join_in_flight_keeps_the_room(
    cluster: ProcessCluster, clients: list[WireClient], db: str
) -> None:
    """The other half of the race, hit every time: the only member leaves the moment they
    hear a joiner on another node arrive, while the joiner's catch-up is still being read.
    The joiner holds their place already, so the room stays, with its history, and the
    joiner is in it; then the two swap roles. The last one out at the end deletes it."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    await ann.ok("create_room", room="Relay")
    for i in range(40):
        await ann.ok("send", room="Relay", text=f"history {i}")
    inside, outside = ann, bob
    for _ in range(6):

        async def leave_on_arrival(member: WireClient) -> None:
            await member.event("member_joined")
            await member.ok("leave_room", room="Relay")

        joined, _ = await asyncio.gather(
            outside.ok("join_room", room="Relay", after=0), leave_on_arrival(inside)
        )
        assert outside.username in joined["members"]
        assert len(joined["messages"]) > 0, "the history survived"
        assert await room_exists(db, "Relay")
        assert (await outside.ok("send", room="Relay", text="still here"))["type"] == "sent"
        inside.drain_events()
        outside.drain_events()
        inside, outside = outside, inside
    await inside.ok("leave_room", room="Relay")
    assert not await room_exists(db, "Relay")


async def test_a_node_frozen_past_its_lease_sends_its_clients_away_on_waking(
    cluster: ProcessCluster, clients: list[WireClient], db: str
) -> None:
    """Node 1 stalls (SIGSTOP) past lease + grace: the others drop Bob and delete the room
    only he was in. On waking, node 1 must not keep Bob as a ghost member of a deleted room:
    it closes him with 1012; back, he finds the deleted room gone and rejoins the other."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    await bob.ok("create_room", room="Solo")
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    await ann.event("member_joined")
    cluster.freeze(1)
    try:
        left = await asyncio.wait_for(ann.event("member_left"), 15)
        assert left == {"type": "member_left", "room": "Lobby", "username": "bob"}
        async with asyncio.timeout(15):
            while await room_exists(db, "Solo"):  # noqa: ASYNC110 - the reaper decides when
                await asyncio.sleep(0.1)
    finally:
        cluster.thaw(1)
    assert await asyncio.wait_for(bob.wait_closed(), 15) == 1012
    back = await resumed(cluster.url(1), bob.token)
    clients.append(back)
    assert (await back.call("join_room", room="Solo"))["code"] == "no_such_room"
    joined = await back.ok("join_room", room="Lobby")
    assert joined["members"] == ["ann", "bob"]
    assert (await ann.event("member_joined"))["username"] == "bob"


async def test_a_node_cut_off_from_the_database_sends_its_clients_away(
    db: str, clients: list[WireClient]
) -> None:
    """PostgreSQL out of reach for longer than the lease: /healthz says 503 and the node
    closes its clients with 1012 (the others will drop its members); when the database is
    back, it serves again by itself."""
    parts = urlsplit(db)
    link = FaultyLink(parts.port or 5432)
    await link.start()
    behind_link = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{link.port}"))
    cluster = ProcessCluster(behind_link, redis_url(), FAST, nodes=1)
    await cluster.start()
    try:
        ann = await on_node(cluster, 0, "ann", clients)
        await ann.ok("create_room", room="Lobby")
        link.refusing = True
        link.cut()
        assert await asyncio.wait_for(ann.wait_closed(), 15) == 1012
        assert await asyncio.to_thread(health, cluster.ports[0]) == 503
        link.refusing = False
        await healthy_again(cluster.ports[0])
        back = await resumed(cluster.url(0), ann.token)
        clients.append(back)
        await back.ok("join_room", room="Lobby")
        await back.ok("send", room="Lobby", text="back")
    finally:
        await cluster.stop()
        await link.close()

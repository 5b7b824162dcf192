"""Messages: send, fan-out, history on join, paging, nonces and the rate limit."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import MakeServer, RunningServer
from tests.server.conftest import Connect
from tests.wsclient import WireClient, in_room, user


async def room_with(connect: Connect, *names: str, room: str = "Lobby") -> list[WireClient]:
    """Clients for ``names``, all joined to ``room`` (created by the first), events drained."""
    clients = [await connect(name) for name in names]
    await in_room(clients, room)
    return clients


async def test_send_is_acknowledged_and_broadcast(connect: Connect) -> None:
    """sent carries the stored message; every member, sender included, gets the event."""
    ann, bob = await room_with(connect, "ann", "bob")
    reply = await ann.ok("send", room="lobby", text="hello\tthere\nfriend")
    message = reply["message"]
    assert reply["type"] == "sent" and reply["room"] == "Lobby"
    assert message["room"] == "Lobby" and message["author"] == "ann"
    assert message["text"] == "hello\tthere\nfriend" and isinstance(message["id"], int)
    assert (await ann.event("message"))["message"] == message
    assert (await bob.event("message"))["message"] == message


async def test_three_users_see_every_message_in_the_same_order(
    make_server: MakeServer,
) -> None:
    """Interleaved sends from three users reach all three in one order, own included."""
    server = await make_server(rate_limit=0)
    clients = [await user(server.url, name) for name in ("ann", "bob", "cyd")]
    await in_room(clients)

    async def chat(client: WireClient) -> None:
        for n in range(20):
            await client.ok("send", room="Lobby", text=f"{client.username} {n}")

    await asyncio.gather(*(chat(c) for c in clients))
    seen = []
    for client in clients:
        seen.append([(await client.event("message"))["message"] for _ in range(60)])
    assert seen[0] == seen[1] == seen[2]
    ids = [m["id"] for m in seen[0]]
    assert ids == sorted(ids) and len(set(ids)) == 60
    for client in clients:
        await client.close()


async def test_message_is_stored_before_it_is_acknowledged(
    connect: Connect, server: RunningServer
) -> None:
    """When sent arrives, the row is already in the database."""
    (ann,) = await room_with(connect, "ann")
    reply = await ann.ok("send", room="Lobby", text="durable")
    rows = await server.rows("SELECT id, text FROM messages")
    assert rows == [(reply["message"]["id"], "durable")]


@pytest.mark.parametrize(
    "text", ["", "   \n\t", "x" * 4001, "bell\x07", "nul\x00", "esc\x1b[31m", "c1\x9b"]
)
async def test_invalid_text_is_refused(connect: Connect, text: str) -> None:
    """Empty, blank, over-long or control-character text gets invalid_text; nothing stored."""
    (ann,) = await room_with(connect, "ann")
    assert (await ann.call("send", room="Lobby", text=text))["code"] == "invalid_text"
    await ann.no_event(0.1)


async def test_longest_text_is_accepted(connect: Connect) -> None:
    """Exactly 4000 characters (multi-byte ones included) is allowed."""
    (ann,) = await room_with(connect, "ann")
    reply = await ann.ok("send", room="Lobby", text="é" * 4000)
    assert len(reply["message"]["text"]) == 4000


async def test_nonce_makes_a_resend_safe(connect: Connect, server: RunningServer) -> None:
    """The same nonce twice answers the stored message and stores and broadcasts once."""
    ann, bob = await room_with(connect, "ann", "bob")
    first = await ann.ok("send", room="Lobby", text="once", nonce="n-1")
    again = await ann.ok("send", room="Lobby", text="once", nonce="n-1")
    assert first["message"] == again["message"]
    await bob.event("message")
    await bob.no_event()
    assert await server.rows("SELECT COUNT(*) FROM messages") == [(1,)]


async def test_concurrent_resends_with_one_nonce_store_once(
    connect: Connect, server: RunningServer
) -> None:
    """A resend racing the original (two connections of one user) still stores once."""
    (ann,) = await room_with(connect, "ann")
    ann2 = await connect()
    await ann2.ok("resume", token=ann.token)
    await ann2.ok("join_room", room="Lobby")
    replies = await asyncio.gather(
        ann.ok("send", room="Lobby", text="race", nonce="same"),
        ann2.ok("send", room="Lobby", text="race", nonce="same"),
    )
    assert replies[0]["message"] == replies[1]["message"]
    assert await server.rows("SELECT COUNT(*) FROM messages") == [(1,)]


async def test_nonces_are_per_user(connect: Connect) -> None:
    """Another user's identical nonce is a different message."""
    ann, bob = await room_with(connect, "ann", "bob")
    a = await ann.ok("send", room="Lobby", text="a", nonce="n")
    b = await bob.ok("send", room="Lobby", text="b", nonce="n")
    assert a["message"]["id"] != b["message"]["id"]


async def test_sending_too_fast_is_rate_limited(make_server: MakeServer) -> None:
    """Past the burst, send gets rate_limited with retry_after; others are unaffected."""
    server = await make_server(rate_limit=5, rate_burst=10)
    ann = await user(server.url, "ann")
    bob = await user(server.url, "bob")
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    replies = [await ann.call("send", room="Lobby", text=f"m{n}") for n in range(12)]
    kinds = [r["type"] for r in replies]
    assert kinds[:10] == ["sent"] * 10 and "error" in kinds[10:]
    limited = next(r for r in replies if r["type"] == "error")
    assert limited["code"] == "rate_limited" and 0 < limited["retry_after"] <= 0.2
    assert (await bob.call("send", room="Lobby", text="me too"))["type"] == "sent"
    await asyncio.sleep(limited["retry_after"])
    assert (await ann.call("send", room="Lobby", text="again"))["type"] == "sent"
    await ann.close()
    await bob.close()


async def fill(client: WireClient, count: int, room: str = "Lobby") -> list[int]:
    """Send ``count`` messages and return their ids."""
    return [
        (await client.ok("send", room=room, text=f"m{n}"))["message"]["id"] for n in range(count)
    ]


@pytest.fixture
async def unlimited(make_server: MakeServer) -> RunningServer:
    return await make_server(rate_limit=0)


async def test_join_brings_the_latest_50_oldest_first(unlimited: RunningServer) -> None:
    """Without after, joined holds the newest 50 messages, oldest first, more=true."""
    ann = await user(unlimited.url, "ann")
    await ann.ok("create_room", room="Lobby")
    ids = await fill(ann, 60)
    bob = await user(unlimited.url, "bob")
    joined = await bob.ok("join_room", room="Lobby")
    assert [m["id"] for m in joined["messages"]] == ids[-50:]
    assert joined["more"] is True
    await ann.close()
    await bob.close()


async def test_join_with_few_messages_says_no_more(unlimited: RunningServer) -> None:
    """Exactly 50 messages: all of them and more=false (the edge)."""
    ann = await user(unlimited.url, "ann")
    await ann.ok("create_room", room="Lobby")
    ids = await fill(ann, 50)
    joined = await ann.ok("join_room", room="Lobby")
    assert [m["id"] for m in joined["messages"]] == ids and joined["more"] is False
    await ann.close()


async def test_join_after_pages_500_at_a_time(unlimited: RunningServer) -> None:
    """With after, messages newer than it come 500 at most; rejoining continues exactly."""
    ann = await user(unlimited.url, "ann")
    await ann.ok("create_room", room="Lobby")
    ids = await fill(ann, 520)
    bob = await user(unlimited.url, "bob")
    first = await bob.ok("join_room", room="Lobby", after=ids[9])
    assert [m["id"] for m in first["messages"]] == ids[10:510] and first["more"] is True
    await ann.ok("send", room="Lobby", text="while catching up")
    await bob.no_event(0.2)  # a member, but not live until more=false
    second = await bob.ok("join_room", room="Lobby", after=first["messages"][-1]["id"])
    assert [m["id"] for m in second["messages"]][:10] == ids[510:]
    assert second["messages"][-1]["text"] == "while catching up" and second["more"] is False
    await ann.ok("send", room="Lobby", text="live now")
    assert (await bob.event("message"))["message"]["text"] == "live now"
    await ann.close()
    await bob.close()


async def test_history_pages_backwards(unlimited: RunningServer) -> None:
    """history gives up to limit messages before an id, oldest first; more is exact at edges."""
    ann = await user(unlimited.url, "ann")
    await ann.ok("create_room", room="Lobby")
    ids = await fill(ann, 30)
    page = await ann.ok("history", room="Lobby", before=ids[20], limit=10)
    assert [m["id"] for m in page["messages"]] == ids[10:20] and page["more"] is True
    page = await ann.ok("history", room="Lobby", before=ids[10], limit=10)
    assert [m["id"] for m in page["messages"]] == ids[:10] and page["more"] is False
    page = await ann.ok("history", room="Lobby", before=ids[0])
    assert page["messages"] == [] and page["more"] is False
    default = await ann.ok("history", room="Lobby", before=ids[-1] + 1)
    assert len(default["messages"]) == 30
    await ann.close()


@pytest.mark.parametrize("limit", [0, 101, -1, "10", 2.5, True])
async def test_history_limit_out_of_range_is_bad_request(connect: Connect, limit: object) -> None:
    """limit outside 1–100 (or not an integer) gets bad_request naming the field."""
    (ann,) = await room_with(connect, "ann")
    reply = await ann.call("history", room="Lobby", before=5, limit=limit)
    assert reply["code"] == "bad_request" and "limit" in reply["message"]


async def test_join_snapshot_races_no_message(unlimited: RunningServer) -> None:
    """Joining while others send: snapshot plus events hold every message exactly once."""
    ann = await user(unlimited.url, "ann")
    await ann.ok("create_room", room="Lobby")
    stop = asyncio.Event()
    sent: list[int] = []

    async def chatter() -> None:
        while not stop.is_set():
            sent.append((await ann.ok("send", room="Lobby", text="x"))["message"]["id"])

    task = asyncio.create_task(chatter())
    await asyncio.sleep(0.05)
    joiners = [await user(unlimited.url, f"joiner{n}") for n in range(5)]
    snapshots = await asyncio.gather(*(j.ok("join_room", room="Lobby") for j in joiners))
    await asyncio.sleep(0.1)
    stop.set()
    await task
    await asyncio.sleep(0.1)
    for joiner, snapshot in zip(joiners, snapshots, strict=True):
        seen = [m["id"] for m in snapshot["messages"]]
        seen += [e["message"]["id"] for e in joiner.drain_events() if e["type"] == "message"]
        assert seen == sorted(set(seen)), "no duplicate, in order"
        assert seen[-1] == sent[-1] and set(sent) >= set(seen)
        assert set(sent[sent.index(seen[0]) :]) == set(seen), "no gap"
        await joiner.close()
    await ann.close()

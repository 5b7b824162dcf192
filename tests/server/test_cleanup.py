"""Presence and automatic cleanup: last leave, grace periods and restarts."""

from __future__ import annotations

import asyncio

from tests.conftest import MakeServer, RunningServer
from tests.server.conftest import Connect
from tests.waiting import wait_until
from tests.wsclient import WireClient, in_room, resumed, user


async def counted(server: RunningServer, table: str, expected: int) -> bool:
    """Whether ``table`` holds ``expected`` rows now."""
    return await server.rows(f"SELECT COUNT(*) FROM {table}") == [(expected,)]


async def names_of_rooms(server: RunningServer, expected: list[str]) -> bool:
    """Whether the stored rooms are exactly ``expected``."""
    return [name for (name,) in await server.rows("SELECT name FROM rooms")] == expected


async def bob_drops_out_of_lobby(
    make_server: MakeServer, grace: float
) -> tuple[RunningServer, WireClient, WireClient]:
    """ann and bob in the lobby, then bob's connection drops without leaving."""
    server = await make_server(grace=grace)
    ann, bob = await user(server.url, "ann"), await user(server.url, "bob")
    await in_room([ann, bob])
    bob.ws.transport.abort()
    return server, ann, bob


async def test_last_leave_deletes_room_and_messages(
    connect: Connect, server: RunningServer
) -> None:
    """When the last member leaves, the room row and its messages leave the database."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    await ann.ok("send", room="Lobby", text="secret plans")
    await ann.ok("leave_room", room="Lobby")
    await wait_until(lambda: counted(server, "rooms", 0))
    assert await counted(server, "messages", 0)
    bob = await connect("bob")
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"


async def test_a_deleted_name_is_free_and_starts_empty(connect: Connect) -> None:
    """After deletion the name can be created again and has no history."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    await ann.ok("send", room="Lobby", text="old")
    await ann.ok("leave_room", room="Lobby")
    again = await ann.ok("create_room", room="LOBBY")
    assert again["room"] == "LOBBY" and again["messages"] == []
    bob = await connect("bob")
    assert (await bob.ok("join_room", room="lobby"))["messages"] == []


async def test_last_logout_deletes_the_room(connect: Connect) -> None:
    """logout counts as leaving: the last member logging out deletes the room."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    await ann.ok("logout")
    bob = await connect("bob")
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"


async def test_dropped_connection_keeps_membership_for_the_grace(make_server: MakeServer) -> None:
    """A drop is silent if the user comes back within the grace period."""
    server, ann, bob = await bob_drops_out_of_lobby(make_server, grace=2.0)
    await asyncio.sleep(0.3)
    bob2 = await resumed(server.url, bob.token)
    joined = await bob2.ok("join_room", room="Lobby")
    assert joined["members"] == ["ann", "bob"]
    await ann.no_event(2.2)
    await ann.close()
    await bob2.close()


async def test_grace_expiry_announces_member_left(make_server: MakeServer) -> None:
    """If the dropped user does not come back, member_left follows the grace period."""
    _, ann, _ = await bob_drops_out_of_lobby(make_server, grace=0.3)
    await ann.no_event(0.15)
    assert await ann.event() == {"type": "member_left", "room": "Lobby", "username": "bob"}
    await ann.close()


async def test_grace_expiry_of_the_last_member_deletes_the_room(make_server: MakeServer) -> None:
    """A room whose only member dropped is deleted when the grace period ends."""
    server = await make_server(grace=0.3)
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    await ann.ok("send", room="Lobby", text="bye")
    ann.ws.transport.abort()
    await asyncio.sleep(0.1)
    assert await server.rows("SELECT name FROM rooms") == [("Lobby",)]
    await wait_until(lambda: counted(server, "messages", 0))
    assert await counted(server, "rooms", 0)


async def test_restart_keeps_rooms_for_one_grace_period(make_server: MakeServer) -> None:
    """After a restart, a rejoined room lives on with its history; an unjoined one is deleted."""
    first = await make_server(grace=1.5)
    ann = await user(first.url, "ann")
    await ann.ok("create_room", room="Kept")
    sent = await ann.ok("send", room="Kept", text="still here")
    await ann.ok("create_room", room="Forgotten")
    await ann.close()
    await first.stop()
    second = await make_server(db=first.db, grace=1.5)
    ann = await resumed(second.url, ann.token)
    joined = await ann.ok("join_room", room="Kept")
    assert joined["messages"] == [sent["message"]]
    await wait_until(lambda: names_of_rooms(second, ["Kept"]))
    await asyncio.sleep(0.3)
    assert await names_of_rooms(second, ["Kept"])
    assert (await ann.call("join_room", room="Forgotten"))["code"] == "no_such_room"
    await ann.close()


async def test_ids_keep_increasing_across_deletion_and_restart(make_server: MakeServer) -> None:
    """A room recreated after a restart never reuses an id a client may hold as ``after``."""
    first = await make_server()
    ann = await user(first.url, "ann")
    await ann.ok("create_room", room="Lobby")
    old = (await ann.ok("send", room="Lobby", text="x"))["message"]["id"]
    await ann.ok("leave_room", room="Lobby")
    await ann.close()
    await first.stop()
    second = await make_server(db=first.db)
    ann = await resumed(second.url, ann.token)
    await ann.ok("create_room", room="Lobby")
    new = (await ann.ok("send", room="Lobby", text="y"))["message"]["id"]
    assert new > old
    await ann.close()


async def test_fifty_clients_joining_and_leaving_stay_consistent(
    make_server: MakeServer,
) -> None:
    """50 clients join and leave one room at once: no orphan room, no deleted room with members."""
    server = await make_server(room_rate_limit=0)
    clients = [await user(server.url, f"user{n:02d}") for n in range(50)]
    await clients[0].ok("create_room", room="Busy")

    async def churn(client, rounds: int) -> None:  # type: ignore[no-untyped-def]
        for _ in range(rounds):
            reply = await client.call("join_room", room="Busy")
            if reply.get("code") == "no_such_room":
                reply = await client.call("create_room", room="Busy")
            if reply["type"] == "joined":
                assert client.username in reply["members"]
                await client.ok("leave_room", room="Busy")
            else:
                assert reply["code"] in ("no_such_room", "room_exists")

    await asyncio.gather(*(churn(c, 5) for c in clients[1:]))
    final = await clients[1].call("join_room", room="Busy")
    assert final["members"] == ["user00", "user01"]
    await clients[1].ok("leave_room", room="Busy")
    await clients[0].ok("leave_room", room="Busy")
    await wait_until(lambda: counted(server, "rooms", 0))
    await asyncio.gather(*(churn(c, 3) for c in clients[1:]))
    await asyncio.sleep(0.1)
    assert await counted(server, "rooms", 0), "nobody is in the room, so it must not exist"
    for client in clients:
        await client.close()

"""Administrators in the protocol: list rooms, delete a room, disable a user; others are refused."""

from __future__ import annotations

from tests.admincli import admin_ok
from tests.conftest import RunningServer
from tests.wsclient import PASSWORD, WireClient, in_room, user


async def make_admin(server: RunningServer, username: str) -> WireClient:
    client = await user(server.url, username)
    await admin_ok("users", "grant-admin", username, "--db", str(server.settings.db))
    return client


async def test_non_admins_are_forbidden_every_admin_request(server: RunningServer) -> None:
    """Without the role each admin request answers forbidden and changes nothing."""
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    for kind, fields in (
        ("admin_rooms", {}),
        ("admin_delete_room", {"room": "Lobby"}),
        ("admin_disable_user", {"username": "ann"}),
    ):
        reply = await ann.call(kind, **fields)
        assert (reply["type"], reply["code"]) == ("error", "forbidden"), kind
    assert (await ann.ok("send", room="Lobby", text="still here"))["type"] == "sent"
    anonymous = await WireClient.open(server.url)
    assert (await anonymous.call("admin_rooms"))["code"] == "unauthenticated"
    for client in (ann, anonymous):
        await client.close()


async def test_an_admin_sees_rooms_with_members_and_messages(server: RunningServer) -> None:
    """admin_rooms lists every room with its live member count and stored messages."""
    boss = await make_admin(server, "boss")
    ann, bob = await user(server.url, "ann"), await user(server.url, "bob")
    await in_room([ann, bob], "Lobby")
    await ann.ok("send", room="Lobby", text="hi")
    await ann.ok("create_room", room="Quiet")
    reply = await boss.ok("admin_rooms")
    assert reply["rooms"] == [
        {"room": "Lobby", "members": 2, "messages": 1},
        {"room": "Quiet", "members": 1, "messages": 0},
    ]
    for client in (boss, ann, bob):
        await client.close()


async def test_an_admin_deletes_a_room_and_its_members_hear_at_once(server: RunningServer) -> None:
    """admin_delete_room answers ok after the members got room_deleted."""
    boss = await make_admin(server, "boss")
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    assert (await boss.ok("admin_delete_room", room="lobby"))["type"] == "ok"
    assert await ann.unmatched() == {"type": "room_deleted", "room": "Lobby"}
    assert (await boss.call("admin_delete_room", room="Lobby"))["code"] == "no_such_room"
    for client in (boss, ann):
        await client.close()


async def test_an_admin_disables_a_user_who_is_cut_off(server: RunningServer) -> None:
    """admin_disable_user closes the user's connections (4001); their login then fails."""
    boss = await make_admin(server, "boss")
    ann = await user(server.url, "ann")
    assert (await boss.ok("admin_disable_user", username="ANN"))["type"] == "ok"
    assert await ann.wait_closed() == 4001
    again = await WireClient.open(server.url)
    assert (await again.call("login", username="ann", password=PASSWORD))["type"] == "error"
    assert (await boss.call("admin_disable_user", username="nobody"))["code"] == "no_such_user"
    for client in (boss, again):
        await client.close()


async def test_revoking_the_role_takes_effect_at_the_next_request(server: RunningServer) -> None:
    """The role is checked at every request: revoke-admin ends it without a reconnect."""
    boss = await make_admin(server, "boss")
    assert (await boss.ok("admin_rooms"))["type"] == "admin_rooms"
    await admin_ok("users", "revoke-admin", "boss", "--db", str(server.settings.db))
    assert (await boss.call("admin_rooms"))["code"] == "forbidden"
    await boss.close()

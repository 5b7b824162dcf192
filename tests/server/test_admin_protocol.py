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


async def test_welcome_says_admin_only_to_admins(server: RunningServer) -> None:
    """login and resume carry admin: true for the role; the field is absent for others."""
    await make_admin(server, "boss")
    await user(server.url, "ann")
    for name, expected in (("boss", True), ("ann", None)):
        client = await WireClient.open(server.url)
        welcome = await client.ok("login", username=name, password=PASSWORD)
        assert welcome.get("admin") is expected, name
        again = await WireClient.open(server.url)
        assert (await again.ok("resume", token=welcome["token"])).get("admin") is expected
        for opened in (client, again):
            await opened.close()


async def test_an_admin_lists_users_and_enables_a_disabled_one(server: RunningServer) -> None:
    """admin_users filters by name and shows status; admin_enable_user lets the user back in."""
    boss = await make_admin(server, "boss")
    mallory, malcolm = await user(server.url, "mallory"), await user(server.url, "Malcolm")
    await boss.ok("admin_disable_user", username="mallory")
    assert await mallory.wait_closed() == 4001
    listed = await boss.ok("admin_users", query="MAL")
    assert listed["users"] == [
        {"username": "mallory", "status": "disabled", "admin": False, "sessions": 0},
        {"username": "Malcolm", "status": "active", "admin": False, "sessions": 1},
    ]
    assert "more" not in listed
    everyone = await boss.ok("admin_users")
    assert [u["username"] for u in everyone["users"]] == ["boss", "mallory", "Malcolm"]
    assert everyone["users"][0]["admin"] is True
    assert (await boss.ok("admin_enable_user", username="Mallory"))["type"] == "ok"
    back = await WireClient.open(server.url)
    assert (await back.ok("login", username="mallory", password=PASSWORD))["type"] == "welcome"
    assert (await boss.call("admin_enable_user", username="nobody"))["code"] == "no_such_user"
    for client in (boss, malcolm, back):
        await client.close()


async def test_non_admins_cannot_list_or_enable_users(server: RunningServer) -> None:
    """The two newer requests answer forbidden too, and enable nothing."""
    boss = await make_admin(server, "boss")
    ann = await user(server.url, "ann")
    await user(server.url, "mallory")
    await boss.ok("admin_disable_user", username="mallory")
    for kind, fields in (("admin_users", {}), ("admin_enable_user", {"username": "mallory"})):
        assert (await ann.call(kind, **fields))["code"] == "forbidden", kind
    locked = await WireClient.open(server.url)
    assert (await locked.call("login", username="mallory", password=PASSWORD))["type"] == "error"
    for client in (boss, ann, locked):
        await client.close()

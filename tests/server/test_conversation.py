"""Conversation features against a real server: read markers, mentions, topic, owner, kick, ban."""

from __future__ import annotations

from tests.conftest import MakeServer, RunningServer
from tests.server.conftest import Connect
from tests.wsclient import in_room, resumed, user


async def test_joined_names_owner_and_a_new_member_has_read_everything(connect: Connect) -> None:
    """The creator owns the room; a joiner's read marker starts at the last message."""
    ann = await connect("ann")
    created = await ann.ok("create_room", room="Lobby")
    assert created["owner"] == "ann" and created["read_up_to"] == 0
    sent = await ann.ok("send", room="Lobby", text="before bob")
    bob = await connect("bob")
    joined = await bob.ok("join_room", room="Lobby")
    assert joined["owner"] == "ann"
    assert joined["read_up_to"] == sent["message"]["id"]


async def test_read_marker_moves_forward_only_and_reaches_other_devices(
    server: RunningServer, connect: Connect
) -> None:
    """mark_read answers the marker; older or unknown ids change nothing; other devices hear it."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    ids = [(await ann.ok("send", room="Lobby", text=f"m{n}"))["message"]["id"] for n in range(3)]
    bob_phone = await resumed(server.url, bob.token)
    try:
        await bob_phone.ok("join_room", room="Lobby")
        reply = await bob.ok("mark_read", room="Lobby", up_to=ids[1])
        assert reply == {"type": "read", "id": reply["id"], "room": "Lobby", "up_to": ids[1]}
        assert await bob_phone.event("read") == {"type": "read", "room": "Lobby", "up_to": ids[1]}
        older = await bob.ok("mark_read", room="Lobby", up_to=ids[0])
        assert older["up_to"] == ids[1]
        beyond = await bob.ok("mark_read", room="Lobby", up_to=ids[2] + 1000)
        assert beyond["up_to"] == ids[1]
    finally:
        await bob_phone.close()


async def test_my_rooms_counts_unread_and_mentions_across_a_restart(
    make_server: MakeServer,
) -> None:
    """Unread and mention counts are stored: a fresh connection after a restart gets them."""
    first = await make_server(grace=30)
    ann, bob = await user(first.url, "ann"), await user(first.url, "bob")
    await in_room([ann, bob])
    await bob.ok("create_room", room="Quiet")
    await bob.close()
    await ann.ok("send", room="Lobby", text="hello everyone")
    last = await ann.ok("send", room="Lobby", text="@BOB are you there? and @nobody")
    await ann.ok("send", room="Lobby", text="@bob.")
    await ann.close()
    await first.stop()
    second = await make_server(db=first.db, grace=30)
    bob = await resumed(second.url, bob.token)
    try:
        reply = await bob.ok("my_rooms")
        lobby = {r["room"]: r for r in reply["rooms"]}["Lobby"]
        assert lobby["unread"] == 3 and lobby["mentions"] == 2
        assert lobby["last_id"] > last["message"]["id"]
        await bob.ok("join_room", room="Lobby")
        await bob.ok("mark_read", room="Lobby", up_to=last["message"]["id"])
        lobby = {r["room"]: r for r in (await bob.ok("my_rooms"))["rooms"]}["Lobby"]
        assert lobby["unread"] == 1 and lobby["mentions"] == 1
    finally:
        await bob.close()


async def test_a_mention_reaches_the_member_and_ignores_outsiders(connect: Connect) -> None:
    """@name of a member sends them a mention event; a non-member's name does nothing."""
    ann, bob, carol = await connect("ann"), await connect("bob"), await connect("carol")
    await in_room([ann, bob])
    sent = await ann.ok("send", room="Lobby", text="ping @Bob and @carol")
    assert await bob.event("mention") == {
        "type": "mention",
        "room": "Lobby",
        "message_id": sent["message"]["id"],
        "author": "ann",
    }
    await carol.no_event()
    assert (await carol.ok("my_rooms"))["rooms"] == []


async def test_leaving_ends_membership_but_a_dropped_connection_does_not(
    make_server: MakeServer,
) -> None:
    """leave_room removes the room from my_rooms; a disconnect keeps it."""
    server = await make_server(grace=0.2)
    ann, bob = await user(server.url, "ann"), await user(server.url, "bob")
    await in_room([ann, bob])
    await in_room([ann, bob], room="Second")
    await bob.ok("leave_room", room="Second")
    await bob.close()
    await ann.event("member_left")
    bob = await resumed(server.url, bob.token)
    try:
        assert [r["room"] for r in (await bob.ok("my_rooms"))["rooms"]] == ["Lobby"]
    finally:
        await bob.close()


async def test_topic_is_owner_only_limited_and_announced(connect: Connect) -> None:
    """The owner sets a topic (event to members, in joined); others get not_owner; limits hold."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    assert (await bob.call("set_topic", room="Lobby", topic="mine"))["code"] == "not_owner"
    for bad in ("x" * 301, "two\nlines", "bell\x07"):
        assert (await ann.call("set_topic", room="Lobby", topic=bad))["code"] == "invalid_topic"
    await ann.ok("set_topic", room="Lobby", topic="  Books, <b>not</b> films  ")
    assert await bob.event("topic") == {
        "type": "topic",
        "room": "Lobby",
        "topic": "Books, <b>not</b> films",
        "by": "ann",
    }
    carol = await connect("carol")
    assert (await carol.ok("join_room", room="Lobby"))["topic"] == "Books, <b>not</b> films"


async def test_ownership_passes_to_the_earliest_joined_member(connect: Connect) -> None:
    """When the owner leaves, the earliest-joined remaining member owns the room (announced)."""
    ann, bob, carol = await connect("ann"), await connect("bob"), await connect("carol")
    await in_room([ann, bob, carol])
    await ann.ok("leave_room", room="Lobby")
    assert await carol.event("owner") == {"type": "owner", "room": "Lobby", "owner": "bob"}
    await bob.ok("set_topic", room="Lobby", topic="bob's now")
    dave = await connect("dave")
    assert (await dave.ok("join_room", room="Lobby"))["owner"] == "bob"


async def test_ownership_passes_when_the_owners_grace_ends(make_server: MakeServer) -> None:
    """An owner whose connection drops keeps the room through the grace, then hands it over."""
    server = await make_server(grace=0.2)
    ann, bob, carol = [await user(server.url, name) for name in ("ann", "bob", "carol")]
    try:
        await in_room([ann, bob, carol])
        await ann.close()
        assert await carol.event("owner") == {"type": "owner", "room": "Lobby", "owner": "bob"}
        await bob.ok("set_topic", room="Lobby", topic="bob's now")
    finally:
        for client in (bob, carol):
            await client.close()


async def test_kick_removes_every_connection_at_once_and_allows_rejoining(
    server: RunningServer, connect: Connect
) -> None:
    """A kicked member's connections are told why and removed; others see member_left."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    bob_laptop = await connect()
    await bob_laptop.ok("resume", token=bob.token)
    await bob_laptop.ok("join_room", room="Lobby")
    reply = await ann.ok("kick", room="Lobby", username="BOB", reason="spam\x1b[31m")
    assert reply["type"] == "ok"
    for connection in (bob, bob_laptop):
        kicked = await connection.event("kicked")
        assert kicked == {"type": "kicked", "room": "Lobby", "by": "ann", "reason": "spam [31m"}
        assert (await connection.call("send", room="Lobby", text="hi"))["code"] == "not_in_room"
    assert (await ann.event("member_left"))["username"] == "bob"
    assert [r["room"] for r in (await bob.ok("my_rooms"))["rooms"]] == []
    assert (await bob.ok("join_room", room="Lobby"))["members"] == ["ann", "bob"]


async def test_kick_errors(connect: Connect) -> None:
    """Only the owner kicks, not themselves, and only members."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    assert (await bob.call("kick", room="Lobby", username="ann"))["code"] == "not_owner"
    assert (await ann.call("kick", room="Lobby", username="ann"))["code"] == "bad_request"
    assert (await ann.call("kick", room="Lobby", username="zed"))["code"] == "no_such_user"
    assert (await ann.call("kick", room="Other", username="bob"))["code"] == "not_in_room"


async def test_ban_refuses_joining_until_unbanned(connect: Connect) -> None:
    """A banned user is removed and refused with banned; unban lets them back in."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    await ann.ok("ban", room="Lobby", username="bob")
    assert (await bob.event("kicked"))["banned"] is True
    refused = await bob.call("join_room", room="Lobby")
    assert refused["code"] == "banned" and "Lobby" in refused["message"]
    assert (await ann.call("ban", room="Lobby", username="nobody"))["code"] == "no_such_user"
    await ann.ok("unban", room="Lobby", username="Bob")
    assert (await ann.call("unban", room="Lobby", username="bob"))["code"] == "no_such_user"
    await bob.ok("join_room", room="Lobby")


async def test_the_ban_list_dies_with_the_room(connect: Connect) -> None:
    """A ban applies to that room only: a new room of the same name starts with no bans."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    await ann.ok("ban", room="Lobby", username="bob")
    await ann.ok("leave_room", room="Lobby")
    await bob.ok("create_room", room="Lobby")


async def test_kicking_the_last_other_member_keeps_cleanup(connect: Connect) -> None:
    """After a kick, the owner leaving deletes the room as usual."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    await ann.ok("kick", room="Lobby", username="bob")
    await ann.ok("leave_room", room="Lobby")
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"

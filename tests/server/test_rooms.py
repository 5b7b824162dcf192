"""Rooms: create, join, leave, names, members and their events."""

from __future__ import annotations

import pytest

from tests.server.conftest import Connect
from tests.wsclient import in_room


async def test_create_room_joins_it(connect: Connect) -> None:
    """create_room answers joined with the creator as the only member and no messages."""
    ann = await connect("ann")
    reply = await ann.ok("create_room", room="  Book Club  ")
    assert reply == {
        "type": "joined",
        "id": reply["id"],
        "room": "Book Club",
        "members": ["ann"],
        "messages": [],
        "more": False,
        "owner": "ann",
        "read_up_to": 0,
    }


async def test_room_names_are_unique_without_regard_to_case_or_form(connect: Connect) -> None:
    """``Café``, ``CAFÉ`` and the fullwidth ``ｃａｆé`` are one name; the first spelling stays."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Café")
    for spelling in ("CAFÉ", "ｃａｆé", "cafe\u0301"):
        assert (await ann.call("create_room", room=spelling))["code"] == "room_exists"
    bob = await connect("bob")
    assert (await bob.ok("join_room", room="ＣＡＦÉ"))["room"] == "Café"


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 65, "semi;colon", "tab\there", "new\nline", "<b>"]
)
async def test_invalid_room_names_are_refused(connect: Connect, name: str) -> None:
    """A name outside 1–64 letters, digits, spaces and - _ . gets invalid_room_name."""
    ann = await connect("ann")
    assert (await ann.call("create_room", room=name))["code"] == "invalid_room_name"
    assert (await ann.call("join_room", room=name))["code"] == "invalid_room_name"


async def test_joining_a_missing_room_says_so(connect: Connect) -> None:
    """join_room of a name no room has: no_such_room."""
    ann = await connect("ann")
    reply = await ann.call("join_room", room="Nowhere")
    assert reply["code"] == "no_such_room" and "Nowhere" in reply["message"]


async def test_join_announces_to_others_and_lists_members(connect: Connect) -> None:
    """A joiner learns the members from joined; the others get member_joined."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    bob = await connect("bob")
    reply = await bob.ok("join_room", room="lobby")
    assert reply["members"] == ["ann", "bob"]
    assert await ann.event("member_joined") == {
        "type": "member_joined",
        "room": "Lobby",
        "username": "bob",
    }
    await bob.no_event()


async def test_joining_twice_is_not_an_error(connect: Connect) -> None:
    """Joining a room one is in answers joined again and announces nothing."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    assert (await bob.ok("join_room", room="Lobby"))["members"] == ["ann", "bob"]
    await ann.no_event()


async def test_members_are_users_not_connections(connect: Connect) -> None:
    """A second connection of a member joins silently; leaving one of two announces nothing."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    bob1 = await connect("bob")
    await bob1.ok("join_room", room="Lobby")
    await ann.event("member_joined")
    bob2 = await connect()
    await bob2.ok("resume", token=bob1.token)
    assert (await bob2.ok("join_room", room="Lobby"))["members"] == ["ann", "bob"]
    await ann.no_event()
    await bob1.ok("leave_room", room="Lobby")
    await ann.no_event()
    await bob2.ok("leave_room", room="Lobby")
    assert (await ann.event())["type"] == "member_left"


async def test_leave_announces_member_left(connect: Connect) -> None:
    """leave_room answers ok and the others get member_left."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    assert (await bob.call("leave_room", room="LOBBY"))["type"] == "ok"
    assert await ann.event() == {"type": "member_left", "room": "Lobby", "username": "bob"}


async def test_requests_in_rooms_not_joined_are_refused(connect: Connect) -> None:
    """send, history and leave_room in a room this connection has not joined: not_in_room."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    bob = await connect("bob")
    for kind, extra in (("send", {"text": "hi"}), ("history", {"before": 5}), ("leave_room", {})):
        assert (await bob.call(kind, room="Lobby", **extra))["code"] == "not_in_room"
        assert (await bob.call(kind, room="Nowhere", **extra))["code"] == "not_in_room"


async def test_another_connection_of_the_same_user_must_join_itself(connect: Connect) -> None:
    """Membership of the user does not let an unjoined connection send."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Lobby")
    ann2 = await connect()
    await ann2.ok("resume", token=ann.token)
    assert (await ann2.call("send", room="Lobby", text="hi"))["code"] == "not_in_room"


async def test_logout_leaves_every_room(connect: Connect) -> None:
    """logout leaves all the connection's rooms as leave_room would."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    await bob.ok("logout")
    assert (await ann.event())["type"] == "member_left"
    assert (await ann.ok("join_room", room="Lobby"))["members"] == ["ann"]


async def test_room_churn_is_rate_limited(make_server) -> None:
    """Creating rooms faster than the room limit gets rate_limited with retry_after."""
    from tests.wsclient import user

    server = await make_server(room_rate_limit=1, room_rate_burst=3)
    ann = await user(server.url, "ann")
    codes = [(await ann.call("create_room", room=f"r{n}"))["type"] for n in range(4)]
    assert codes == ["joined", "joined", "joined", "error"]
    reply = await ann.call("create_room", room="r9")
    assert reply["code"] == "rate_limited" and reply["retry_after"] > 0
    await ann.close()

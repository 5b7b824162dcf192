"""Private rooms and direct messages: invitations, and nothing visible to outsiders."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Connect
from tests.wsclient import WireClient

ROOM_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("join_room", {}),
    ("create_room", {}),
    ("send", {"text": "hi"}),
    ("history", {"before": 10**6}),
    ("leave_room", {}),
    ("mark_read", {"up_to": 1}),
    ("typing", {"state": "active"}),
    ("set_topic", {"topic": "x"}),
    ("kick", {"username": "ann"}),
    ("ban", {"username": "ann"}),
    ("unban", {"username": "ann"}),
    ("invite", {"username": "ann"}),
]


async def answers(client: WireClient, room: str) -> list[tuple[str, str]]:
    """What each room-naming request says about ``room``, with the name itself blanked."""
    said = []
    for kind, fields in ROOM_REQUESTS:
        reply = await client.call(kind, room=room, **fields)
        said.append((reply.get("code", reply["type"]), reply.get("message", "").replace(room, "R")))
    return said


async def test_create_private_names_it_in_the_creators_namespace(connect: Connect) -> None:
    """private: true makes ~creator/name; creating in another's namespace is refused."""
    ann = await connect("Ann")
    joined = await ann.ok("create_room", room="Plans", private=True)
    assert joined["room"] == "~Ann/Plans" and joined["owner"] == "Ann"
    assert (await ann.call("create_room", room="~ann/plans"))["code"] == "room_exists"
    await ann.ok("create_room", room="Plans")  # the public namespace is separate
    bob = await connect("bob")
    refused = await bob.call("create_room", room="~Ann/Other")
    assert refused["code"] == "invalid_room_name" and "~bob/" in refused["message"]


async def test_outsiders_cannot_tell_a_private_room_exists(connect: Connect) -> None:
    """Every request naming an existing private room answers an outsider as for a missing one."""
    ann = await connect("ann")
    await ann.ok("create_room", room="Plans", private=True)
    await ann.ok("send", room="~ann/Plans", text="secret plan")
    await ann.event("message")
    eve = await connect("eve")
    existing = await answers(eve, "~ann/Plans")
    missing = await answers(eve, "~ann/Nothing")
    assert existing == missing
    assert existing[0][0] == "no_such_room"
    assert (await eve.ok("my_rooms"))["rooms"] == []
    await eve.no_event()
    await ann.no_event()


async def test_an_invitation_lets_one_user_in_and_shows_on_their_dashboard(
    connect: Connect,
) -> None:
    """The owner invites by username: the invitee is told, sees it in my_rooms, and may join."""
    ann, bob, eve = await connect("ann"), await connect("bob"), await connect("eve")
    await ann.ok("create_room", room="Plans", private=True)
    assert (await bob.call("invite", room="~ann/Plans", username="eve"))["code"] == "not_in_room"
    await ann.ok("invite", room="~ann/Plans", username="BOB")
    assert await bob.event("invited") == {"type": "invited", "room": "~ann/Plans", "by": "ann"}
    assert (await bob.ok("my_rooms"))["invitations"] == [{"room": "~ann/Plans", "by": "ann"}]
    joined = await bob.ok("join_room", room="~ANN/plans")
    assert joined["members"] == ["ann", "bob"]
    assert "invitations" not in await bob.ok("my_rooms")
    assert (await eve.call("join_room", room="~ann/Plans"))["code"] == "no_such_room"
    await ann.ok("create_room", room="Public")
    bad = await ann.call("invite", room="Public", username="bob")
    assert bad["code"] == "bad_request" and "private" in bad["message"]


async def test_direct_opens_one_room_for_two_and_reopens_it(connect: Connect) -> None:
    """direct makes @a+b (the other is invited); from either side it is the same room."""
    ann, bob, eve = await connect("ann"), await connect("bob"), await connect("eve")
    opened = await ann.ok("direct", username="Bob")
    assert opened["type"] == "joined" and opened["room"] == "@ann+bob"
    assert await bob.event("invited") == {"type": "invited", "room": "@ann+bob", "by": "ann"}
    await ann.ok("send", room="@ann+bob", text="psst")
    reopened = await bob.ok("direct", username="ann")
    assert reopened["room"] == "@ann+bob" and [m["text"] for m in reopened["messages"]] == ["psst"]
    assert (await eve.call("join_room", room="@ann+bob"))["code"] == "no_such_room"
    assert (await eve.call("create_room", room="@ann+bob"))["code"] == "invalid_room_name"
    assert (await ann.call("direct", username="ann"))["code"] == "bad_request"
    assert (await ann.call("direct", username="nobody"))["code"] == "no_such_user"
    await ann.ok("leave_room", room="@ann+bob")
    await bob.ok("leave_room", room="@ann+bob")
    fresh = await bob.ok("direct", username="ann")
    assert fresh["messages"] == [] and fresh["owner"] == "bob"

"""Messages that live: edit, delete, reactions and replies, over real WebSockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import MakeServer
from tests.server.conftest import Connect
from tests.waiting import wait_until
from tests.wsclient import WireClient, in_room, resumed


async def pair(connect: Connect) -> tuple[WireClient, WireClient]:
    """ann and bob in the room Lobby."""
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    return ann, bob


async def said(client: WireClient, text: str, **extra: Any) -> dict[str, Any]:
    """Send ``text`` to Lobby; the stored message (its event consumed by the sender)."""
    message = (await client.ok("send", room="Lobby", text=text, **extra))["message"]
    await client.event("message")
    return message


async def error_code(client: WireClient, kind: str, **fields: Any) -> str:
    reply = await client.call(kind, **fields)
    assert reply["type"] == "error", reply
    assert "Traceback" not in reply["message"]
    return str(reply["code"])


async def latest(client: WireClient) -> list[dict[str, Any]]:
    """The room's latest messages as ``client`` sees them on a fresh page."""
    page = await client.ok("history", room="Lobby", before=2**62)
    return list(page["messages"])


# ------------------------------------------------------------------- edits


async def test_author_edits_and_the_room_sees_the_new_text(connect: Connect) -> None:
    """An edit answers ``changed``, tells the room, and history shows the new text and edited_at."""
    ann, bob = await pair(connect)
    message = await said(ann, "helo")
    await bob.event("message")
    reply = await ann.ok("edit", room="Lobby", message=message["id"], text="hello")
    assert reply["type"] == "changed" and reply["message"]["text"] == "hello"
    assert "edited_at" in reply["message"]
    event = await bob.event("message_changed")
    assert event["change"] == "edited" and event["by"] == "ann"
    assert event["message"]["id"] == message["id"] and event["message"]["text"] == "hello"
    assert event["position"] > message["id"]
    (shown,) = await latest(bob)
    assert shown["text"] == "hello" and shown["edited_at"] == reply["message"]["edited_at"]


async def test_edits_that_are_not_allowed_get_clear_errors(connect: Connect) -> None:
    """Someone else's message, a deleted one, an unknown id, bad text, a room not joined."""
    ann, bob = await pair(connect)
    message = await said(ann, "mine")
    assert await error_code(bob, "edit", room="Lobby", message=message["id"], text="x") == (
        "forbidden"
    )
    assert await error_code(ann, "edit", room="Lobby", message=10**9, text="x") == (
        "no_such_message"
    )
    assert await error_code(ann, "edit", room="Lobby", message=message["id"], text=" ") == (
        "invalid_text"
    )
    await ann.ok("create_room", room="Other")
    assert await error_code(ann, "edit", room="Other", message=message["id"], text="x") == (
        "no_such_message"
    )
    assert await error_code(bob, "edit", room="Other", message=message["id"], text="x") == (
        "not_in_room"
    )
    await ann.ok("delete", room="Lobby", message=message["id"])
    assert await error_code(ann, "edit", room="Lobby", message=message["id"], text="x") == (
        "message_deleted"
    )
    assert (await latest(ann))[0]["text"] == ""


# --------------------------------------------------------------- deletions


async def test_delete_leaves_a_tombstone_and_tells_the_room(connect: Connect) -> None:
    """A deletion keeps id, author and time, erases the text, and everyone is told."""
    ann, bob = await pair(connect)
    message = await said(ann, "oops, my password is hunter2")
    await bob.event("message")
    assert await error_code(bob, "delete", room="Lobby", message=message["id"]) == "forbidden"
    reply = await ann.ok("delete", room="Lobby", message=message["id"])
    assert reply["message"]["deleted"] is True and reply["message"]["text"] == ""
    event = await bob.event("message_changed")
    assert event["change"] == "deleted" and event["message"]["deleted"] is True
    assert "hunter2" not in str(event)
    (shown,) = await latest(bob)
    assert shown["id"] == message["id"] and shown["author"] == "ann"
    assert shown["at"] == message["at"] and shown["deleted"] is True and shown["text"] == ""
    assert await error_code(ann, "delete", room="Lobby", message=message["id"]) == (
        "message_deleted"
    )


async def test_the_room_owner_deletes_anyones_message_but_edits_none(connect: Connect) -> None:
    """The owner (ann made Lobby) may delete bob's message there, yet not edit it."""
    ann, bob = await pair(connect)
    message = await said(bob, "spam spam spam")
    await ann.event("message")
    assert await error_code(ann, "edit", room="Lobby", message=message["id"], text="x") == (
        "forbidden"
    )
    reply = await ann.ok("delete", room="Lobby", message=message["id"])
    assert reply["message"]["deleted"] is True and reply["message"]["author"] == "bob"
    event = await bob.event("message_changed")
    assert event["change"] == "deleted" and event["by"] == "ann"


@pytest.mark.sqlite_only
async def test_deleted_text_leaves_the_database_file_wal_and_index(
    connect: Connect, server: Any
) -> None:
    """After a deletion the text's bytes are in neither clubroom.db nor its WAL, nor found."""
    ann, _ = await pair(connect)
    secret = "zanzibarquokkamarmalade"
    message = await said(ann, f"the code is {secret}")
    assert (await ann.ok("search", room="Lobby", query=secret))["results"]
    await ann.ok("delete", room="Lobby", message=message["id"])
    assert (await ann.ok("search", room="Lobby", query=secret))["results"] == []

    def on_disk() -> bool:
        files = [server.db_path, server.db_path.with_name(server.db_path.name + "-wal")]
        return any(secret.encode() in f.read_bytes() for f in files if f.exists())

    await wait_until(lambda: not on_disk())  # the checkpointer truncates the WAL soon after


# --------------------------------------------------------------- reactions


async def test_reactions_are_counted_once_per_user_and_shown_with_mine(connect: Connect) -> None:
    """Reacting twice counts once; history says how many and whether you reacted."""
    ann, bob = await pair(connect)
    message = await said(ann, "ship it?")
    await bob.event("message")
    first = await bob.ok("react", room="Lobby", message=message["id"], emoji="👍")
    assert first["message"]["reactions"] == [{"emoji": "👍", "count": 1, "mine": True}]
    event = await ann.event("message_changed")
    assert event["change"] == "reacted" and event["by"] == "bob" and event["emoji"] == "👍"
    again = await bob.ok("react", room="Lobby", message=message["id"], emoji="👍")
    assert again["message"]["reactions"] == [{"emoji": "👍", "count": 1, "mine": True}]
    await ann.no_event()
    await ann.ok("react", room="Lobby", message=message["id"], emoji=":tada:")
    (seen_by_ann,) = await latest(ann)
    assert seen_by_ann["reactions"] == [
        {"emoji": "👍", "count": 1},
        {"emoji": ":tada:", "count": 1, "mine": True},
    ]
    await bob.ok("react", room="Lobby", message=message["id"], emoji="👍", remove=True)
    (after_removal,) = await latest(bob)
    assert after_removal["reactions"] == [{"emoji": ":tada:", "count": 1}]


async def test_invalid_and_too_many_reactions_are_refused(make_server: MakeServer) -> None:
    """Text is no reaction; a message takes at most 20 different ones."""
    server = await make_server(rate_limit=0)
    ann = await WireClient.open(server.url)
    await ann.register("ann")
    await ann.ok("create_room", room="Lobby")
    message = await said(ann, "react to me")
    for bad in ("ok", "👍👍", "", ":Not Valid:", "x👍"):
        code = await error_code(ann, "react", room="Lobby", message=message["id"], emoji=bad)
        assert code == "invalid_reaction", bad
    for n in range(20):
        await ann.ok("react", room="Lobby", message=message["id"], emoji=f":e{n}:")
    assert await error_code(ann, "react", room="Lobby", message=message["id"], emoji="👍") == (
        "too_many_reactions"
    )
    await ann.ok("react", room="Lobby", message=message["id"], emoji=":e3:")  # one already there
    await ann.close()


async def test_concurrent_reactions_of_one_user_count_once(make_server: MakeServer) -> None:
    """Twenty identical reactions sent at once by two connections of one user count once."""
    server = await make_server(rate_limit=0)
    ann = await WireClient.open(server.url)
    await ann.register("ann")
    ann2 = await resumed(server.url, ann.token)
    await ann.ok("create_room", room="Lobby")
    await ann2.ok("join_room", room="Lobby")
    message = await said(ann, "race")
    await ann2.event("message")
    calls = [
        client.ok("react", room="Lobby", message=message["id"], emoji="🎉")
        for client in (ann, ann2) * 10
    ]
    replies = await asyncio.gather(*calls)
    assert {str(r["message"]["reactions"]) for r in replies} == {
        str([{"emoji": "🎉", "count": 1, "mine": True}])
    }
    assert [e["change"] for e in ann.drain_events() if e["type"] == "message_changed"] in (
        ["reacted"],
        [],  # the event may still be on its way: wait for it below
    )
    await ann2.event("message_changed")
    await ann2.no_event()
    await ann.close()
    await ann2.close()


# ----------------------------------------------------------------- replies


async def test_replies_carry_an_excerpt_of_the_original(connect: Connect) -> None:
    """A reply names its original with an excerpt; once that is deleted, it says so."""
    ann, bob = await pair(connect)
    original = await said(ann, "Who brings the cake on Friday? " + "x" * 200)
    await bob.event("message")
    reply = await bob.ok("send", room="Lobby", text="I do", reply_to=original["id"])
    ref = reply["message"]["reply_to"]
    assert ref["id"] == original["id"] and ref["author"] == "ann"
    assert ref["excerpt"] == original["text"][:100]
    assert (await ann.event("message"))["message"]["reply_to"] == ref
    await ann.ok("delete", room="Lobby", message=original["id"])
    shown = await latest(ann)
    assert shown[-1]["reply_to"] == {"id": original["id"], "author": "ann", "deleted": True}
    assert await error_code(bob, "send", room="Lobby", text="hm", reply_to=original["id"]) == (
        "message_deleted"
    )
    await bob.ok("create_room", room="Elsewhere")
    assert await error_code(bob, "send", room="Elsewhere", text="hm", reply_to=shown[-1]["id"]) == (
        "no_such_message"
    )


# -------------------------------------------------------------- catching up


async def test_a_resuming_client_catches_up_with_changes_it_missed(
    connect: Connect, server: Any
) -> None:
    """``join_room`` with ``after`` returns changed earlier messages and a cursor; then live."""
    ann, bob = await pair(connect)
    kept = await said(ann, "first draft")
    gone = await said(ann, "regrettable")
    liked = await said(ann, "nice")
    for _ in range(3):
        await bob.event("message")
    last_seen = liked["id"]
    await bob.close()
    await ann.ok("edit", room="Lobby", message=kept["id"], text="final draft")
    await ann.ok("delete", room="Lobby", message=gone["id"])
    await ann.ok("react", room="Lobby", message=liked["id"], emoji="❤️")
    new = await said(ann, "anyone here?")
    await ann.ok("edit", room="Lobby", message=new["id"], text="anyone there?")

    back = await resumed(server.url, bob.token)
    page = await back.ok("join_room", room="Lobby", after=last_seen)
    assert [m["text"] for m in page["messages"]] == ["anyone there?"]
    changes = {m["id"]: m for m in page["changes"]}
    assert changes[kept["id"]]["text"] == "final draft" and "edited_at" in changes[kept["id"]]
    assert changes[gone["id"]]["deleted"] is True and changes[gone["id"]]["text"] == ""
    assert changes[liked["id"]]["reactions"] == [{"emoji": "❤️", "count": 1}]
    assert page["more"] is False and page["cursor"] > new["id"]
    again = await back.ok("join_room", room="Lobby", after=page["cursor"])
    assert again["messages"] == [] and "changes" not in again
    await ann.ok("edit", room="Lobby", message=kept["id"], text="final final draft")
    assert (await back.event("message_changed"))["message"]["text"] == "final final draft"
    await back.close()

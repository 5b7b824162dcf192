"""Look-alike names: invisible characters are refused, confusable spellings are one name."""

from __future__ import annotations

import sqlite3

import pytest

import protocol
from tests.conftest import MakeServer
from tests.server.conftest import Connect
from tests.wsclient import PASSWORD, WireClient, user

LATIN, CYRILLIC, GREEK = "pay", "\u0440\u0430\u0443", "\u03c1\u03b1y"


async def test_latin_cyrillic_and_greek_spellings_are_one_room(connect: Connect) -> None:
    """``pay`` in Cyrillic or Greek letters is the existing room, not a new one."""
    ann = await connect("ann")
    bob = await connect("bob")
    await ann.ok("create_room", room=LATIN)
    for spelling in (CYRILLIC, GREEK):
        assert (await bob.call("create_room", room=spelling))["code"] == "room_exists"
    joined = await bob.ok("join_room", room=CYRILLIC)
    assert joined["room"] == LATIN and joined["members"] == ["ann", "bob"]


@pytest.mark.parametrize("invisible", ["\u3164", "\u200b", "\u00ad", "\u2060", "\U000e0061"])
async def test_invisible_characters_are_refused_in_room_names(
    connect: Connect, invisible: str
) -> None:
    """A room name holding a default-ignorable (invisible) character is invalid_room_name."""
    ann = await connect("ann")
    await ann.ok("create_room", room="pay")
    reply = await ann.call("create_room", room="pay" + invisible)
    assert reply["code"] == "invalid_room_name" and "invisible" in reply["message"]


@pytest.mark.parametrize(
    ("first", "look_alike"), [("Bill", "BiII"), ("Otto", "0tto"), ("mary", "rnary")]
)
async def test_look_alike_usernames_are_taken(
    connect: Connect, first: str, look_alike: str
) -> None:
    """A username that looks like an existing one is username_taken; login accepts either."""
    await connect(first)
    other = await connect()
    reply = await other.call("register", username=look_alike, password=PASSWORD)
    assert reply["code"] == "username_taken"
    welcome = await other.ok("login", username=look_alike, password=PASSWORD)
    assert welcome["username"] == first


@pytest.mark.sqlite_only
async def test_a_database_with_old_keys_still_works(make_server: MakeServer) -> None:
    """Accounts and rooms stored with the old lower-case keys are found after an upgrade."""
    server = await make_server()
    mary = await user(server.url, "Mary")
    await mary.ok("create_room", room="Room")
    await mary.ok("send", room="Room", text="kept")
    await mary.close()
    await server.stop()
    with sqlite3.connect(server.db_path) as db:  # as the previous version stored them
        db.execute("UPDATE users SET key = ?", (protocol.legacy_username_key("Mary"),))
        db.execute("UPDATE rooms SET key = ?", (protocol.legacy_room_key("Room"),))
    assert protocol.legacy_username_key("Mary") != protocol.username_key("Mary")
    await server.start()
    again = await WireClient.open(server.url)
    assert (await again.ok("login", username="mary", password=PASSWORD))["username"] == "Mary"
    joined = await again.ok("join_room", room="ROOM")
    assert [m["text"] for m in joined["messages"]] == ["kept"]
    taken = await WireClient.open(server.url)
    assert (await taken.call("register", username="MARY", password=PASSWORD))["code"] == (
        "username_taken"
    )
    await again.close()
    await taken.close()


def test_room_keys_fold_case_width_and_look_alikes() -> None:
    """Case, fullwidth forms and confusable letters all fold to one key."""
    assert len({protocol.room_key(n) for n in ("Café", "CAFÉ", "ｃａｆé", " café ")}) == 1
    assert protocol.room_key(LATIN) == protocol.room_key(CYRILLIC) == protocol.room_key(GREEK)
    assert protocol.room_key("book") != protocol.room_key("look")

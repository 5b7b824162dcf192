"""Searching a room's messages by words, over real WebSockets, on both backends."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.conftest import MakeServer, RunningServer
from tests.server.conftest import Connect
from tests.server.crowd import DEEP_OFFSET, WORD, crowded_database, messages_locked
from tests.waiting import wait_until
from tests.wsclient import WireClient, in_room


async def room_of(make_server: MakeServer, *texts: str) -> tuple[WireClient, list[int]]:
    """ann alone in Lobby, having said ``texts`` (in order); their ids."""
    server = await make_server(rate_limit=0)
    ann = await WireClient.open(server.url)
    await ann.register("ann")
    await ann.ok("create_room", room="Lobby")
    ids = [(await ann.ok("send", room="Lobby", text=t))["message"]["id"] for t in texts]
    return ann, ids


async def found(client: WireClient, query: str, **extra: Any) -> list[str]:
    page = await client.ok("search", room="Lobby", query=query, **extra)
    return [result["message"]["text"] for result in page["results"]]


async def test_search_finds_every_word_newest_first_with_offsets(make_server: MakeServer) -> None:
    """Messages with all the words, newest first; highlights are code-point offsets."""
    ann, _ = await room_of(
        make_server, "Lunch at noon?", "the LUNCH menu: soup", "dinner later", "lunch menu again"
    )
    assert await found(ann, "lunch") == [
        "lunch menu again",
        "the LUNCH menu: soup",
        "Lunch at noon?",
    ]
    assert await found(ann, "menu lunch") == ["lunch menu again", "the LUNCH menu: soup"]
    page = await ann.ok("search", room="Lobby", query='"MENU again"')
    assert [r["message"]["text"] for r in page["results"]] == ["lunch menu again"]
    assert page["results"][0]["highlights"] == [[6, 16]]
    assert await found(ann, '"again menu"') == []
    assert "<" not in str(page) and "\x01" not in str(page)
    assert await found(ann, "breakfast") == []
    await ann.close()


async def test_best_order_ranks_the_closer_match_first(make_server: MakeServer) -> None:
    """``order: best`` puts the message where the word weighs most first."""
    long_text = "a long note about many things, " * 10 + "and one mention of kiwi"
    ann, _ = await room_of(make_server, "kiwi kiwi kiwi", long_text)
    assert await found(ann, "kiwi", order="best") == ["kiwi kiwi kiwi", long_text]
    assert await found(ann, "kiwi") == [long_text, "kiwi kiwi kiwi"]
    await ann.close()


async def test_search_pages_with_offset_and_more(make_server: MakeServer) -> None:
    """Results come in pages: ``more`` until the last, ``offset`` moves on, nothing repeats."""
    ann, ids = await room_of(make_server, *(f"note number {n}" for n in range(7)))
    seen: list[int] = []
    offset, more = 0, True
    while more:
        page = await ann.ok("search", room="Lobby", query="note", limit=3, offset=offset)
        seen += [r["message"]["id"] for r in page["results"]]
        offset, more = offset + len(page["results"]), page["more"]
    assert seen == list(reversed(ids))
    await ann.close()


@pytest.mark.parametrize(
    "query",
    ['"unbalanced', "", "   ", "* ( ) -", "x" * 201],
)
async def test_bad_queries_get_a_clear_error(make_server: MakeServer, query: str) -> None:
    """Unclosed quotes, no words, or a too-long query answer invalid_query, never a DB error."""
    ann, _ = await room_of(make_server, "hello")
    reply = await ann.call("search", room="Lobby", query=query)
    if len(query) > 200:
        assert reply["code"] == "bad_request"
    else:
        assert reply["code"] == "invalid_query" and "database" not in reply["message"].lower()
    await ann.close()


async def test_fts_operators_are_plain_words(make_server: MakeServer) -> None:
    """AND, OR, NEAR(, * and ^ are not syntax: they are words or nothing, and never an error."""
    ann, _ = await room_of(make_server, "cats AND dogs", "cats or dogs, near me")
    assert await found(ann, "cats AND") == ["cats AND dogs"]
    assert await found(ann, "NEAR(cats dogs) ^cats* OR") == ["cats or dogs, near me"]
    await ann.close()


async def test_edited_and_deleted_messages_are_found_by_current_text_only(
    make_server: MakeServer,
) -> None:
    """After an edit the old words find nothing and the new ones do; a deleted message is gone."""
    ann, (first, second) = await room_of(make_server, "apricot jam", "apricot pie")
    await ann.ok("edit", room="Lobby", message=first, text="plum jam")
    await ann.ok("delete", room="Lobby", message=second)
    assert await found(ann, "apricot") == []
    assert await found(ann, "plum") == ["plum jam"]
    await ann.close()


async def test_only_joined_rooms_can_be_searched(connect: Connect) -> None:
    """Searching a room you are not in answers not_in_room and shows nothing of it."""
    ann, bob = await connect("ann"), await connect("bob")
    await ann.ok("create_room", room="Private")
    await ann.ok("send", room="Private", text="the secret plan")
    await bob.ok("create_room", room="Lobby")
    reply = await bob.call("search", room="Private", query="secret")
    assert reply["code"] == "not_in_room" and "plan" not in str(reply)
    assert (await bob.ok("search", room="Lobby", query="secret"))["results"] == []


async def test_search_ignores_diacritics(make_server: MakeServer) -> None:
    """café finds cafe and CAFÉ (SQLite: unicode61 without diacritics; PostgreSQL: unaccent)."""
    ann, _ = await room_of(make_server, "Meet at the CAFÉ", "no cafe today")
    assert await found(ann, "café") == ["no cafe today", "Meet at the CAFÉ"]
    page = await ann.ok("search", room="Lobby", query="cafe")
    assert page["results"][1]["highlights"] == [[12, 16]]
    await ann.close()


@pytest.mark.single_process
async def test_a_search_past_the_timeout_gets_advice_not_a_database_error(
    make_server: MakeServer,
) -> None:
    """A search the server stops at ``search_timeout`` answers invalid_query with what to do.

    The timeout is tiny and the search a deep page of a crowded room (and,
    on PostgreSQL, the table held locked meanwhile): see tests/server/crowd.
    The connection goes on: the next request is answered as usual.
    """
    server = await make_server(rate_limit=0, search_timeout=0.000_001)
    await server.stop()
    await crowded_database(server.db, "Crowded")
    await server.start()
    ann = await WireClient.open(server.url)
    await ann.register("ann")
    await ann.ok("join_room", room="Crowded")
    async with messages_locked(server.db):
        reply = await ann.call("search", room="Crowded", query=WORD, offset=DEEP_OFFSET)
    assert reply["code"] == "invalid_query"
    assert "took too long" in reply["message"] and "rarer word" in reply["message"]
    assert "database" not in reply["message"].lower()
    assert (await ann.ok("send", room="Crowded", text="still here"))["message"]["id"]
    await ann.close()


@pytest.mark.sqlite_only
async def test_a_deleted_room_leaves_nothing_in_the_index(
    connect: Connect, server: RunningServer
) -> None:
    """When the last member leaves, the room's words leave the FTS5 index too."""
    ann = await connect("ann")
    await in_room([ann], "Short lived")
    await ann.ok("send", room="Short lived", text="ephemeral xylophone")
    await ann.ok("leave_room", room="Short lived")

    def indexed() -> int:
        with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True) as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'xylophone'"
            ).fetchone()
            (rooms,) = db.execute("SELECT COUNT(*) FROM rooms").fetchone()
        return int(count) + int(rooms)

    await wait_until(lambda: indexed() == 0)


@pytest.mark.sqlite_only
async def test_a_deleted_room_s_words_leave_the_files(
    connect: Connect, server: RunningServer
) -> None:
    """The index's copy of a deleted room's words (lower-cased tokens) leaves clubroom.db*."""
    word = b"quixoticzebrawhistle"
    ann = await connect("ann")
    await in_room([ann], "Gone soon")
    await ann.ok("send", room="Gone soon", text=f"the {word.decode().upper()} plan")

    def on_disk() -> bool:
        return any(
            word in path.read_bytes()
            for path in server.db_path.parent.glob(server.db_path.name + "*")
        )

    await wait_until(on_disk)  # the index holds the lower-cased token
    await ann.ok("leave_room", room="Gone soon")
    await wait_until(lambda: not on_disk())

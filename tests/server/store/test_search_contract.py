"""The search contract: both backends find, order, page and forget messages alike.

SQLite (FTS5, unicode61 without diacritics) and PostgreSQL (tsvector through
``clubroom_search``: 'simple' with ``unaccent``) are asked the same questions
through the store interface and must give the same answers.
"""

from __future__ import annotations

import pytest

from clubroom_server.search import parse_query
from clubroom_server.store import (
    MessageRecord,
    RoomRecord,
    SearchTooSlow,
    Store,
    UserRecord,
    open_store,
)
from clubroom_server.store.changes import ChangeKind, MessageChange
from tests.server.crowd import CROWD, DEEP_OFFSET, WORD, counted, crowd, messages_locked

NOW = 1_700_000_000_000


async def ann_in(store: Store, *rooms: str) -> tuple[UserRecord, list[RoomRecord]]:
    ann = await store.add_user("ann", "ann", "$argon2id$fake", NOW)
    return ann, [await store.add_room(name, name.lower(), NOW) for name in rooms]


async def said(
    store: Store, user: UserRecord, room: RoomRecord, *texts: str
) -> list[MessageRecord]:
    return [
        await store.append_message(room.id, user.id, user.username, text, NOW) for text in texts
    ]


async def found(
    store: Store, room: RoomRecord, query: str, newest: bool = True, limit: int = 50
) -> list[str]:
    """The texts a search finds, in the order given (one page)."""
    hits, _ = await store.search_messages(room.id, parse_query(query), newest, 0, limit)
    return [hit.message.text for hit in hits]


async def change(
    store: Store, user: UserRecord, message: MessageRecord, kind: ChangeKind, text: str = ""
) -> None:
    await store.change_message(
        MessageChange(kind, message.room_id, message.id, user.id, user.username, NOW, text=text)
    )


async def test_accents_and_case_are_folded_both_ways(store: Store) -> None:
    """cafe finds Café and CAFÉ; café finds cafe; naïve, Ærø and señor fold too."""
    ann, (room,) = await ann_in(store, "Lobby")
    await said(store, ann, room, "Meet at the CAFÉ", "no cafe today", "un café, señor", "zzz")
    assert await found(store, room, "cafe") == [
        "un café, señor",
        "no cafe today",
        "Meet at the CAFÉ",
    ]
    assert await found(store, room, "CAFÉ") == await found(store, room, "cafe")
    assert await found(store, room, "senor") == ["un café, señor"]
    await said(store, ann, room, "a naïve plan", "Ærø is an island")
    assert await found(store, room, "naive") == ["a naïve plan"]
    assert await found(store, room, "ærø") == ["Ærø is an island"]
    assert await found(store, room, '"un cafe"') == ["un café, señor"]


async def test_phrases_need_their_words_together_and_in_order(store: Store) -> None:
    """A quoted phrase finds only its words side by side; unquoted words anywhere."""
    ann, (room,) = await ann_in(store, "Lobby")
    await said(
        store, ann, room, "the quick brown fox", "fox quick", "quick, the fox", "quick fox jumps"
    )
    for newest in (True, False):
        assert sorted(await found(store, room, '"quick fox"', newest)) == ["quick fox jumps"]
        assert sorted(await found(store, room, '"quick brown fox" the', newest)) == [
            "the quick brown fox"
        ]
    assert len(await found(store, room, "fox quick")) == 4


async def test_deleted_and_edited_away_text_is_never_found(store: Store) -> None:
    """After a deletion no search finds the message; after an edit only the new words do."""
    ann, (room,) = await ann_in(store, "Lobby")
    _, gone, edited = await said(store, ann, room, "apricot jam", "apricot secret", "apricot pie")
    await change(store, ann, gone, ChangeKind.DELETE)
    await change(store, ann, edited, ChangeKind.EDIT, text="plum pie")
    for newest in (True, False):
        assert await found(store, room, "apricot", newest) == ["apricot jam"]
        assert await found(store, room, "secret", newest) == []
        assert await found(store, room, "pie", newest) == ["plum pie"]
    await said(store, ann, room, *(f"apricot {n}" for n in range(30)))  # more index segments
    assert "apricot secret" not in await found(store, room, "apricot", limit=100)


async def test_pages_cover_every_match_once_in_both_orders(store: Store) -> None:
    """Paging by offset walks all matches: newest first in id order, best first the same set."""
    ann, (room, other) = await ann_in(store, "Lobby", "Other")
    texts = [f"{'tea ' * (1 + n % 4)}cup {n}" for n in range(23)]
    await said(store, ann, room, *texts[:10], "coffee only", *texts[10:])
    await said(store, ann, other, "tea in another room")
    for newest in (True, False):
        seen: list[str] = []
        offset, more = 0, True
        while more:
            hits, more = await store.search_messages(room.id, ["tea"], newest, offset, 5)
            seen += [hit.message.text for hit in hits]
            offset += len(hits)
        if newest:
            assert seen == texts[::-1]
        else:
            assert sorted(seen) == sorted(texts)
            assert seen[0].startswith("tea tea tea tea"), "the closest match first"


async def test_only_the_room_searched_is_searched(store: Store) -> None:
    """A word said in another room, however often, finds nothing here."""
    ann, (room, busy) = await ann_in(store, "Quiet", "Busy")
    await said(store, ann, busy, *(f"walrus {n}" for n in range(40)))
    await said(store, ann, room, "no such animal here")
    assert await found(store, room, "walrus") == []
    assert await found(store, room, "walrus", newest=False) == []
    assert len(await found(store, busy, "walrus")) == 40


def talk(n: int) -> str:
    """Message ``n`` of 6,000: every one says kiwi, every other one even, one in a
    hundred fig, and plum: three times in message 100, once in every 50th."""
    words = ["kiwi", str(n)]
    words += ["even"] if n % 2 == 0 else []
    words += ["fig"] if n % 100 == 10 else []
    words += ["plum"] * 3 if n == 100 else ["plum and more words besides"] if n % 50 == 0 else []
    words += ["quince"] if n in (5, 700, 1500) else []
    return " ".join(words)


async def test_search_is_exact_beyond_the_newest_thousand_messages(store: Store) -> None:
    """Matches old and new, dense and sparse, page by page: every one once, in order.

    The room is larger than the part of it PostgreSQL looks at first
    (postgres_search.WINDOWS), so both ways to the older matches are taken:
    the walk (even, fig) and the index (quince, plum).
    """
    room = await crowd(store, "Big", 6000, talk)

    async def texts(query: str, newest: bool, offset: int, limit: int) -> list[str]:
        hits, _ = await store.search_messages(room.id, parse_query(query), newest, offset, limit)
        return [hit.message.text for hit in hits]

    assert await texts("quince", True, 0, 20) == [talk(n) for n in (1500, 700, 5)]
    assert await texts("quince", True, 1, 20) == [talk(n) for n in (700, 5)]
    assert await texts("fig", True, 50, 20) == [talk(n) for n in range(910, 0, -100)]
    assert await texts("even", True, 2800, 3) == [talk(n) for n in (398, 396, 394)]
    assert await texts("kiwi even", True, 2990, 20) == [talk(n) for n in range(18, -1, -2)]
    assert await texts('"kiwi 5"', True, 0, 20) == [talk(5)]
    best = await texts("plum", False, 0, 2)
    assert best[0] == talk(100)
    plums = [text for page in range(3) for text in await texts("plum", False, 50 * page, 50)]
    assert len(set(plums)) == len(plums) == 120
    figs = [talk(n) for n in range(5910, 0, -100)]
    assert await texts("fig", False, 0, 50) == figs[:50]


async def test_a_search_past_its_timeout_is_stopped_and_the_store_goes_on(url: str) -> None:
    """Past ``search_timeout`` a search raises SearchTooSlow; the store and its data are fine.

    The timeout is tiny and the search a deep page of a crowded room (and,
    on PostgreSQL, the table held locked meanwhile): see tests/server/crowd.
    """
    hasty = await open_store(url, synchronous="NORMAL", search_timeout=0.000_001)
    try:
        room = await crowd(hasty, "Crowded")
        for _ in range(2):  # the search connection is still usable after a stop
            async with messages_locked(url):
                with pytest.raises(SearchTooSlow):
                    await hasty.search_messages(room.id, [WORD], True, DEEP_OFFSET, 20)
        latest, _ = await hasty.latest_messages(room.id, 1)
        assert [m.text for m in latest] == [counted(CROWD - 1)]
    finally:
        await hasty.close()
    patient = await open_store(url, synchronous="NORMAL")
    try:
        hits, more = await patient.search_messages(room.id, [WORD], True, DEEP_OFFSET, 2)
        assert [h.message.text for h in hits] == [
            counted(CROWD - 1 - DEEP_OFFSET - n) for n in (0, 1)
        ]
        assert more
    finally:
        await patient.close()

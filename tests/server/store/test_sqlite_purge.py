"""SQLite: a deleted message's words leave the FTS5 index soon after the deletion, not during it.

The index keeps a deleted text's words until a merge rewrites its segments
(SQLite 3.40 has no FTS5 secure-delete); ``store.purge`` does that in the
background. These tests read the database files' bytes, as an attacker with
the disk would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clubroom_server.search import parse_query
from clubroom_server.store import MessageRecord, Store, open_store, purge
from clubroom_server.store.changes import ChangeKind, MessageChange
from tests.waiting import wait_until

NOW = 1_700_000_000_000
# The index keeps words lower-cased: sent in capitals, the word's lower-case
# bytes are in the files only through the index.
WORD = "quokkazanzibarmarmalade"


def on_disk(path: Path) -> bool:
    """Whether the index's copy of WORD is in clubroom.db or its WAL."""
    return any(WORD.encode() in f.read_bytes() for f in path.parent.glob(path.name + "*"))


async def filled(store: Store, count: int = 200) -> MessageRecord:
    """A room of ``count`` messages (sent together), one of them holding WORD (in capitals)."""
    ann = await store.add_user("ann", "ann", "$argon2id$fake", NOW)
    room = await store.add_room("Lobby", "lobby", NOW)
    texts = [f"message number {n}" for n in range(count)]
    texts[count // 2] = f"the code is {WORD.upper()}"
    sent = await asyncio.gather(
        *(store.append_message(room.id, ann.id, "ann", text, NOW) for text in texts)
    )
    return next(message for message in sent if WORD.upper() in message.text)


async def delete(store: Store, message: MessageRecord) -> None:
    await store.change_message(
        MessageChange(ChangeKind.DELETE, message.room_id, message.id, message.author_id, "ann", NOW)
    )


async def found(store: Store, message: MessageRecord) -> bool:
    for newest in (True, False):
        hits, _ = await store.search_messages(message.room_id, parse_query(WORD), newest, 0, 5)
        if hits:
            return True
    return False


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "clubroom.db"


async def test_a_deleted_message_is_unfound_at_once_and_its_words_leave_the_files(
    path: Path,
) -> None:
    """The deletion's answer already means unfound; the words leave the files soon after."""
    store = await open_store(str(path), synchronous="NORMAL")
    try:
        secret = await filled(store)
        assert await found(store, secret)
        await wait_until(lambda: on_disk(path))
        await delete(store, secret)
        assert not await found(store, secret)
        await wait_until(lambda: not on_disk(path))
    finally:
        await store.close()


async def test_a_purge_cut_short_by_a_stop_is_done_at_the_next_start(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped before its purge ran, the server erases the words when it starts again."""
    monkeypatch.setattr(purge, "PURGE_DELAY", 3600.0)  # the purge never comes in time
    store = await open_store(str(path), synchronous="NORMAL")
    try:
        secret = await filled(store)
        await delete(store, secret)
    finally:
        await store.close()
    assert on_disk(path), "the words are still in the index"
    monkeypatch.setattr(purge, "PURGE_DELAY", 0.0)
    store = await open_store(str(path), synchronous="NORMAL")
    try:
        assert not await found(store, secret)
        await wait_until(lambda: not on_disk(path))
    finally:
        await store.close()


async def test_a_purge_that_runs_out_of_steps_finishes_with_one_merge(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When other merges take the steps' budget, one ``optimize`` still erases the words."""
    monkeypatch.setattr(purge, "SLACK_STEPS", -1_000_000)  # no step at all is allowed
    monkeypatch.setattr(purge, "PURGE_PAGES", 1)  # and the first merges next to nothing
    store = await open_store(str(path), synchronous="NORMAL")
    try:
        secret = await filled(store, 3000)  # words enough that one page cannot reach WORD
        await wait_until(lambda: on_disk(path))
        await delete(store, secret)
        await wait_until(lambda: not on_disk(path))
    finally:
        await store.close()

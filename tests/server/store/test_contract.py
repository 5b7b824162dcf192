"""The store contract: what every backend promises, checked through the interface only."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from clubroom_server import admin
from clubroom_server.store import (
    DuplicateError,
    MessageRecord,
    NotFoundError,
    RoomRecord,
    SchemaError,
    StartupError,
    Store,
    TokenRecord,
    UserRecord,
    open_store,
)
from tests.server.store.backends import Backend

NOW = 1_700_000_000_000


async def ann_in(store: Store, *rooms: str) -> tuple[UserRecord, list[RoomRecord]]:
    """The user ann and the rooms named, freshly stored."""
    ann = await store.add_user("ann", "ann", "$argon2id$fake", NOW)
    return ann, [await store.add_room(name, name.lower(), NOW) for name in rooms]


async def say(store: Store, user: UserRecord, room: RoomRecord, text: str, **kw) -> MessageRecord:  # type: ignore[no-untyped-def]
    return await store.append_message(room.id, user.id, user.username, text, NOW, **kw)


async def everything(store: Store) -> list[object]:
    """Every stored record, through ``dump`` (the one way to see all rows)."""
    return [record async for batch in store.dump(batch_size=7) for record in batch]


# ------------------------------------------------------------------ ids and seqs


async def test_concurrent_appends_get_dense_ids_and_dense_seqs_in_commit_order(
    store: Store,
) -> None:
    """300 appends from 300 tasks: ids 1..300 once each; per room seq 1..n in id order."""
    ann, rooms = await ann_in(store, "A", "B", "C")
    announced: list[MessageRecord] = []
    picks = random.Random(7).choices(rooms, k=300)
    stored = await asyncio.gather(
        *(
            say(store, ann, room, f"m{n}", on_stored=announced.append)
            for n, room in enumerate(picks)
        )
    )
    ids = sorted(m.id for m in stored)
    assert ids == list(range(ids[0], ids[0] + 300)), "ids are dense and unique"
    by_room: dict[int, list[MessageRecord]] = defaultdict(list)
    for message in announced:
        by_room[message.room_id].append(message)
    for room in rooms:
        in_order = by_room[room.id]
        assert [m.seq for m in in_order] == list(range(1, len(in_order) + 1))
        assert [m.id for m in in_order] == sorted(m.id for m in in_order)
        page, more = await store.messages_after(room.id, 0, 1000)
        assert page == in_order and not more, "readers see what was announced, in order"
    assert sorted(announced, key=lambda m: m.id) == sorted(stored, key=lambda m: m.id)


async def test_on_stored_runs_before_the_append_returns(store: Store) -> None:
    """The announcement of a message happens before its sender hears it was stored."""
    ann, (room,) = await ann_in(store, "A")
    announced: list[int] = []
    message = await say(store, ann, room, "hi", on_stored=lambda m: announced.append(m.id))
    assert announced == [message.id]
    assert (message.seq, message.text, message.author, message.author_id) == (
        1,
        "hi",
        "ann",
        ann.id,
    )


async def test_ids_never_come_back_after_deletion_and_reopening(store: Store, url: str) -> None:
    """A room deleted and created again, even after a restart, gets ids above every old one."""
    ann, (room,) = await ann_in(store, "A")
    old = [await say(store, ann, room, f"m{n}") for n in range(3)]
    await store.delete_room(room.id)
    await store.close()
    reopened = await open_store(url)
    try:
        again = await reopened.add_room("A", "a", NOW)
        assert again.id > room.id
        fresh = await say(reopened, ann, again, "new")
        assert fresh.id > old[-1].id and fresh.seq == 1
    finally:
        await reopened.close()


# -------------------------------------------------------------------- uniqueness


async def test_taken_user_and_room_keys_are_duplicates(store: Store) -> None:
    """A second user or room with a taken key is refused with DuplicateError; nothing changes."""
    _, (room,) = await ann_in(store, "Lobby")
    with pytest.raises(DuplicateError):
        await store.add_user("ANN", "ann", "$argon2id$other", NOW)
    with pytest.raises(DuplicateError):
        await store.add_room("LOBBY", "lobby", NOW)
    assert (await store.user_by_key("ann")).password_hash == "$argon2id$fake"  # type: ignore[union-attr]
    assert await store.all_rooms() == [room]


async def test_a_reused_nonce_is_a_duplicate_and_finds_the_first(store: Store) -> None:
    """One nonce per author and room: a reuse is refused and the first message is found."""
    ann, (room, other) = await ann_in(store, "A", "B")
    bob = await store.add_user("bob", "bob", "$argon2id$fake", NOW)
    first = await say(store, ann, room, "once", nonce="n1")
    with pytest.raises(DuplicateError):
        await say(store, ann, room, "twice", nonce="n1")
    assert await store.message_by_nonce(room.id, ann.id, "n1") == first
    assert await store.message_by_nonce(room.id, bob.id, "n1") is None
    elsewhere = await say(store, ann, other, "other room", nonce="n1")
    by_bob = await store.append_message(room.id, bob.id, "bob", "bob's", NOW, nonce="n1")
    assert (elsewhere.seq, by_bob.seq) == (1, 2), "a refused append takes no seq"


async def test_a_duplicate_in_a_busy_batch_fails_alone(store: Store) -> None:
    """A reused nonce among many concurrent appends fails alone; the others are stored, dense."""
    ann, (room,) = await ann_in(store, "A")
    await say(store, ann, room, "first", nonce="dup")
    results = await asyncio.gather(
        *(say(store, ann, room, f"m{n}", nonce="dup" if n == 10 else f"n{n}") for n in range(40)),
        return_exceptions=True,
    )
    assert [type(r) for r in results].count(DuplicateError) == 1
    assert isinstance(results[10], DuplicateError)
    page, _ = await store.messages_after(room.id, 0, 100)
    assert [m.seq for m in page] == list(range(1, 41))


async def test_appending_to_a_room_that_is_not_stored_is_not_found(store: Store) -> None:
    """A message for a deleted (or never stored) room is refused with NotFoundError."""
    ann, (room,) = await ann_in(store, "A")
    await store.delete_room(room.id)
    with pytest.raises(NotFoundError):
        await say(store, ann, room, "too late")


# ------------------------------------------------------------------------ paging


async def test_paging_edges(store: Store) -> None:
    """latest / before / after: empty rooms, exact limits, the first and last ids."""
    ann, (room, empty) = await ann_in(store, "A", "Empty")
    assert await store.latest_messages(empty.id, 5) == ([], False)
    assert await store.messages_after(empty.id, 0, 5) == ([], False)
    assert await store.messages_before(empty.id, 10**12, 5) == ([], False)
    msgs = [await say(store, ann, room, f"m{n}") for n in range(5)]
    assert await store.latest_messages(room.id, 5) == (msgs, False)
    assert await store.latest_messages(room.id, 4) == (msgs[1:], True)
    assert await store.messages_before(room.id, None, 2) == (msgs[3:], True)
    assert await store.messages_before(room.id, msgs[2].id, 2) == (msgs[:2], False)
    assert await store.messages_before(room.id, msgs[2].id, 1) == (msgs[1:2], True)
    assert await store.messages_before(room.id, msgs[0].id, 3) == ([], False)
    assert await store.messages_after(room.id, 0, 5) == (msgs, False)
    assert await store.messages_after(room.id, msgs[1].id, 2) == (msgs[2:4], True)
    assert await store.messages_after(room.id, msgs[-1].id, 2) == ([], False)
    assert await store.messages_after(room.id, 10**12, 2) == ([], False)


# ------------------------------------------------------------------------ tokens


async def test_tokens_live_until_their_expiry_and_can_be_revoked(store: Store) -> None:
    """A token works before its expiry, not at it; revoking and purging remove tokens."""
    ann, _ = await ann_in(store)
    await store.add_token("live", ann.id, NOW + 1000)
    await store.add_token("old", ann.id, NOW)
    assert await store.user_by_token("live", NOW + 999) == (ann, NOW + 1000)
    assert await store.user_by_token("live", NOW + 1000) is None
    assert await store.user_by_token("unknown", NOW) is None
    await store.purge_expired_tokens(NOW)
    assert [r for r in await everything(store) if isinstance(r, TokenRecord)] == [
        TokenRecord("live", ann.id, NOW + 1000)
    ]
    await store.revoke_token("live")
    assert await store.user_by_token("live", NOW) is None
    with pytest.raises(DuplicateError):
        await store.add_token("x", ann.id, NOW)  # fine once…
        await store.add_token("x", ann.id, NOW)  # …not twice


async def test_password_hash_can_be_replaced(store: Store) -> None:
    """set_password_hash replaces the stored hash (a rehash after login)."""
    ann, _ = await ann_in(store)
    await store.set_password_hash(ann.id, "$argon2id$new")
    assert (await store.user_by_key("ann")).password_hash == "$argon2id$new"  # type: ignore[union-attr]


# ---------------------------------------------------------------------- deletion


async def test_deleting_a_room_leaves_no_message_row(store: Store) -> None:
    """After delete_room no row of the room or its messages is left; other rooms keep theirs."""
    ann, (doomed, kept) = await ann_in(store, "Doomed", "Kept")
    for n in range(20):
        await say(store, ann, doomed, f"secret {n}", nonce=f"n{n}")
    survivor = await say(store, ann, kept, "stays")
    await store.delete_room(doomed.id)
    rows = await everything(store)
    assert [r for r in rows if isinstance(r, MessageRecord)] == [survivor]
    assert [r.id for r in rows if isinstance(r, RoomRecord)] == [kept.id]
    assert await store.message_by_nonce(doomed.id, ann.id, "n1") is None
    assert await store.latest_messages(doomed.id, 50) == ([], False)


# -------------------------------------------------------------------- migrations


FIRST_SCHEMA_ROWS = [
    (
        "users",
        ("id", "username", "key", "password_hash", "created_ms"),
        [(1, "ann", "ann", "h", 1)],
    ),
    ("tokens", ("hash", "user_id", "expires_ms"), [("tok", 1, NOW)]),
    ("rooms", ("id", "name", "key", "created_ms"), [(1, "A", "a", 1), (3, "B", "b", 1)]),
    (
        "messages",
        ("id", "room_id", "author_id", "author", "text", "at_ms", "nonce"),
        [
            (1, 1, 1, "ann", "a1", 1, None),
            (2, 3, 1, "ann", "b1", 1, "n"),
            (4, 1, 1, "ann", "a2", 1, None),
            (7, 1, 1, "ann", "a3", 1, None),
            (8, 3, 1, "ann", "b2", 1, None),
        ],
    ),
]


async def test_first_schema_is_migrated_with_seqs_in_id_order(backend: Backend, url: str) -> None:
    """A schema-1 database opens: messages get seq 1..n per room in id order; ids keep growing."""
    await backend.build_first_schema(url, FIRST_SCHEMA_ROWS)
    store = await open_store(url)
    try:
        a, _ = await store.latest_messages(1, 10)
        b, _ = await store.latest_messages(3, 10)
        assert [(m.id, m.seq, m.text) for m in a] == [(1, 1, "a1"), (4, 2, "a2"), (7, 3, "a3")]
        assert [(m.id, m.seq, m.text) for m in b] == [(2, 1, "b1"), (8, 2, "b2")]
        assert [r.last_seq for r in await store.all_rooms()] == [3, 2]
        ann = await store.user_by_key("ann")
        assert ann is not None and await store.user_by_token("tok", NOW - 1) == (ann, NOW)
        newest = await store.append_message(1, 1, "ann", "a4", NOW)
        assert (newest.seq, newest.id > 8) == (4, True)
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(backend: Backend, url: str) -> None:
    """A database from a future Clubroom is never opened (SchemaError naming the version)."""
    await (await open_store(url)).close()
    await backend.claim_schema_version(url, 99)
    with pytest.raises(SchemaError, match="99"):
        await open_store(url)


async def test_another_applications_database_is_refused(backend: Backend, url: str) -> None:
    """A database holding someone else's tables is never touched (SchemaError)."""
    await backend.add_foreign_table(url)
    with pytest.raises(SchemaError, match="not a Clubroom database"):
        await open_store(url)


# -------------------------------------------------------------------------- copy


@pytest.mark.parametrize("target_backend", ["sqlite", "postgres"])
async def test_copy_keeps_everything_and_refuses_a_filled_target(
    store: Store, url: str, target_backend: str, tmp_path
) -> None:
    """copy carries users, tokens, rooms and messages with ids and seqs; ids never go back."""
    from tests.databases import database_url

    ann, (room, gone) = await ann_in(store, "A", "Gone")
    await store.add_token("tok", ann.id, NOW + 5)
    kept = [await say(store, ann, room, f"m{n}", nonce=f"n{n}") for n in range(5)]
    last = await say(store, ann, gone, "deleted later")
    await store.delete_room(gone.id)
    before = await everything(store)
    async with database_url(target_backend, tmp_path, "target") as target:
        summary = await admin.copy(url, target, progress=lambda line: None)
        assert "1 users, 1 tokens, 1 rooms, 5 messages" in summary
        copied = await open_store(target)
        try:
            assert await everything(copied) == before
            assert await copied.message_by_nonce(room.id, ann.id, "n3") == kept[3]
            newest = await copied.append_message(room.id, ann.id, "ann", "after", NOW)
            assert newest.seq == 6 and newest.id > last.id, "no id is reused"
            assert (await copied.add_room("New", "new", NOW)).id > gone.id
        finally:
            await copied.close()
        with pytest.raises(StartupError, match="already holds data"):
            await admin.copy(url, target, progress=lambda line: None)


@pytest.mark.parametrize("target_backend", ["sqlite", "postgres"])
async def test_copy_keeps_conversation_state(
    store: Store, url: str, target_backend: str, tmp_path
) -> None:
    """copy carries owner, topic, memberships with read markers, mentions, bans, invitations."""
    from clubroom_server.store.conversation import open_conversation_store
    from tests.databases import database_url

    ann, (room, secret) = await ann_in(store, "A", "Secret")
    bob = await store.add_user("bob", "bob", "$argon2id$fake", NOW)
    talk = await open_conversation_store(url)
    try:
        for user in (ann, bob):
            await talk.remember(room.id, user.id, NOW)
        first = await say(store, ann, room, "hello")
        mention = await say(store, ann, room, "@bob look")
        await talk.mark_read(room.id, bob.id, first.id)
        await talk.record_mentions(room.id, mention.id, ann.id, {"bob"})
        await talk.set_owner(room.id, "ann")
        await talk.set_topic(room.id, "Plans for Friday")
        await talk.ban(room.id, "mallory", "Mallory")
        await talk.invite(secret.id, "bob", "ann")
        badges = await talk.memberships(bob.id)
    finally:
        await talk.close()
    before = await everything(store)
    async with database_url(target_backend, tmp_path, "target") as target:
        summary = await admin.copy(url, target, progress=lambda line: None)
        assert "2 memberships, 1 mentions, 1 bans, 1 invitations" in summary
        copied = await open_store(target)
        try:
            assert await everything(copied) == before
        finally:
            await copied.close()
        talk = await open_conversation_store(target)
        try:
            assert await talk.memberships(bob.id) == badges
            assert badges[0].unread == 1 and badges[0].mentions == 1
            meta = {m.room_id: m for m in await talk.room_meta()}[room.id]
            assert (meta.owner, meta.topic) == ("ann", "Plans for Friday")
            assert await talk.is_banned(room.id, "mallory")
            assert await talk.invitations("bob") == [("Secret", "ann")]
        finally:
            await talk.close()


async def test_two_servers_appending_to_one_room_keep_seq_dense_and_in_id_order(
    store: Store, url: str
) -> None:
    """Two stores on one database (two server processes) interleave appends without a gap."""
    second = await open_store(url, synchronous="NORMAL")
    try:
        ann, (room,) = await ann_in(store, "Shared")
        both = await asyncio.gather(
            *(say(node, ann, room, f"{n}") for n in range(60) for node in (store, second))
        )
        page, _ = await second.messages_after(room.id, 0, 1000)
        assert [m.seq for m in page] == list(range(1, 121))
        assert sorted(both, key=lambda m: m.id) == page, "id order is seq order"
    finally:
        await second.close()

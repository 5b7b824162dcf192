"""The one storage interface the server speaks, in the chat's own terms.

Two backends implement it (``sqlite.SQLiteStore``, ``postgres.PostgresStore``)
and one contract suite (tests/server/store/) runs against both. Nothing here
mentions SQL, a connection, a writer queue or a driver exception: callers see
records (``records.py``) and the ``StoreError`` tree below, nothing else.

Guarantees every backend keeps:

* Writes are durable when their call returns (the backends batch concurrent
  writes into one transaction, "group commit", so durability costs one flush
  per batch, not per write).
* Message ids are integers that only ever grow, across rooms, deletions and
  restarts; an id is never handed out twice.
* Within a room, commit order equals id order, and ``seq`` numbers the
  messages 1, 2, 3… without gaps: the id and the next ``seq`` are taken in the
  transaction that inserts the message, under a lock on the room's row.
* ``append_message(on_stored=…)`` callbacks run in commit order, right after
  the commit and before any caller of that batch resumes: the place to
  announce a message, which then reaches listeners in id order per room.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from clubroom_server.store.records import (
    DumpBatch,
    HighWater,
    MessageRecord,
    RoomRecord,
    UserRecord,
)

if TYPE_CHECKING:
    from clubroom_server.store.changes import (
        ChangeRecord,
        MessageChange,
        ReactionCount,
        SearchHit,
    )

OnStored = Callable[[MessageRecord], None]


class StoreError(Exception):
    """The store could not do what was asked; the message is safe to log (no secrets)."""


class DuplicateError(StoreError):
    """A uniqueness rule refused the write: a taken user or room key, a reused nonce."""


class NotFoundError(StoreError):
    """The write refers to something that is not stored (e.g. a room deleted meanwhile)."""


class UnavailableError(StoreError):
    """The database cannot be reached just now; the same request may succeed later.

    Nothing was stored by the call that raised it. The backend reconnects by
    itself; no caller action is needed beyond answering ``unavailable``.
    """


# Seconds a search may run before it is stopped (``SearchTooSlow``): far
# above the 50 ms target, so only a query that would hold a search connection
# for long is cut, not one slowed by a busy machine.
DEFAULT_SEARCH_TIMEOUT = 1.0


class SearchTooSlow(StoreError):
    """A search ran past the store's ``search_timeout`` and was stopped.

    The database is unharmed and the connection stays usable; the words asked
    for too much work (e.g. a word in most messages of other rooms and none of
    this one). Answered ``invalid_query`` with advice, never a database error.
    """


class StartupError(StoreError):
    """The store cannot open: one sentence naming the database and what to do.

    Raised only by ``open()`` and the migration/copy commands; the CLI prints
    it as is and exits non-zero. It never contains a password.
    """


class SchemaError(StartupError):
    """The database is not Clubroom's, or its schema is newer than this code."""


class PoolUsage(NamedTuple):
    """A connection pool's state, for the metrics (PostgreSQL; SQLite has no pool)."""

    in_use: int
    idle: int
    max: int


class Store(Protocol):
    """Accounts, tokens, rooms and messages, durably stored."""

    @property
    def description(self) -> str:
        """Where the data lives, for logs and messages (never with a password)."""
        ...

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Connect, apply pending migrations and start the writer (``StartupError``)."""
        ...

    async def close(self) -> None:
        """Finish every accepted write, then release every connection (idempotent)."""
        ...

    async def ping(self) -> None:
        """One trivial read: ``UnavailableError`` unless the database answers now (metrics)."""
        ...

    def pool_usage(self) -> PoolUsage | None:
        """The connection pool's state, or None for a backend without a pool."""
        ...

    # ----------------------------------------------------------------- users

    async def add_user(
        self, username: str, key: str, password_hash: str, now_ms: int
    ) -> UserRecord:
        """Store a new account; ``DuplicateError`` if ``key`` is taken."""
        ...

    async def user_by_key(self, key: str) -> UserRecord | None: ...

    async def set_password_hash(self, user_id: int, password_hash: str) -> None: ...

    # ---------------------------------------------------------------- tokens

    async def add_token(self, token_hash: str, user_id: int, expires_ms: int) -> None: ...

    async def user_by_token(self, token_hash: str, now_ms: int) -> tuple[UserRecord, int] | None:
        """The user a live (unexpired at ``now_ms``) token belongs to, and its expiry."""
        ...

    async def revoke_token(self, token_hash: str) -> None: ...

    async def purge_expired_tokens(self, now_ms: int) -> None: ...

    # ----------------------------------------------------------------- rooms

    async def add_room(self, name: str, key: str, now_ms: int) -> RoomRecord:
        """Store a new, empty room; ``DuplicateError`` if ``key`` is taken."""
        ...

    async def all_rooms(self) -> list[RoomRecord]:
        """Every stored room, oldest first."""
        ...

    async def delete_room(self, room_id: int) -> None:
        """Delete a room and every message row of it (see SECURITY.md for what remains)."""
        ...

    # -------------------------------------------------------------- messages

    async def append_message(
        self,
        room_id: int,
        author_id: int,
        author: str,
        text: str,
        at_ms: int,
        nonce: str | None = None,
        on_stored: OnStored | None = None,
        reply_to: int | None = None,
    ) -> MessageRecord:
        """Store a message and return it with its id and ``seq``.

        ``on_stored(record)`` is called in commit order, right after the
        commit, before this call returns (it must not raise or block).
        ``DuplicateError`` if this author already used ``nonce`` in the room;
        ``NotFoundError`` if the room is not stored.
        """
        ...

    async def change_message(
        self, change: MessageChange, on_stored: Callable[[ChangeRecord], None] | None = None
    ) -> ChangeRecord:
        """Apply an edit, deletion or reaction in one transaction, as ``changes`` describes.

        A change that changes something is stored as a change row with the
        next id and the room's next ``seq``; ``on_stored`` runs in commit
        order like ``append_message``'s. ``ChangeRefused`` names a broken rule.
        """
        ...

    async def last_row(self, room_id: int) -> MessageRecord | None:
        """The room's newest row, message or change: where its order stands (cluster anchor)."""
        ...

    async def messages_by_id(self, room_id: int, ids: Sequence[int]) -> list[MessageRecord]:
        """The rows of ``room_id`` with these ids (any order; missing ones left out)."""
        ...

    async def reactions(
        self, message_ids: Sequence[int], user_id: int
    ) -> dict[int, list[ReactionCount]]:
        """Reaction counts of these messages, with whether ``user_id`` gave each."""
        ...

    async def search_messages(
        self, room_id: int, phrases: Sequence[str], newest: bool, offset: int, limit: int
    ) -> tuple[list[SearchHit], bool]:
        """Live messages of the room containing every phrase; a page, and whether more match.

        A search that runs longer than the store's ``search_timeout`` is
        stopped and raises ``SearchTooSlow``.
        """
        ...

    async def message_by_nonce(
        self, room_id: int, author_id: int, nonce: str
    ) -> MessageRecord | None: ...

    async def latest_messages(self, room_id: int, limit: int) -> tuple[list[MessageRecord], bool]:
        """The newest ``limit`` messages, oldest first, and whether older ones exist."""
        ...

    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        """Up to ``limit`` messages with id < ``before`` (or the newest), oldest first, more?"""
        ...

    async def messages_after(
        self, room_id: int, after: int, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        """Up to ``limit`` rows with id > ``after``, oldest first, and whether more remain.

        Change rows (kind > 0) are included: a resuming client learns of changes.
        ``latest_messages`` and ``messages_before`` list messages (kind 0) only.
        """
        ...

    # ------------------------------------------------------- moving the data

    async def is_empty(self) -> bool:
        """True when no user, token, room or message is stored (a safe ``copy`` target)."""
        ...

    def dump(self, batch_size: int = 1000) -> AsyncIterator[DumpBatch]:
        """Everything, in batches: users, then tokens, rooms and messages (ids ascending)."""
        ...

    async def high_water(self) -> HighWater:
        """The largest ids ever handed out, deleted rows included."""
        ...

    async def load(self, batch: Sequence[object]) -> None:
        """Store dumped records as they are (ids, seqs and all), in one transaction."""
        ...

    async def raise_high_water(self, marks: HighWater) -> None:
        """Make sure no id up to ``marks`` is ever handed out by this store."""
        ...

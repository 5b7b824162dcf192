"""What the store hands out and takes in: plain, frozen dataclasses, no rows.

Every backend returns exactly these, so the chat logic (and the tests) never
see a database type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class UserRecord:
    """An account; ``key`` is the case-folded username that must be unique."""

    id: int
    username: str
    key: str
    password_hash: str
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A session token, stored only as its hash."""

    hash: str
    user_id: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A room; ``last_seq`` is the ``seq`` of its newest message (0 when it has none)."""

    id: int
    name: str
    key: str
    created_ms: int = 0
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A stored message.

    ``id`` is unique across rooms and only ever grows (never reused, even after
    the room is deleted); ``seq`` numbers the messages of one room 1, 2, 3…
    without gaps, in commit order, which is also id order within the room.
    """

    id: int
    room_id: int
    seq: int
    author_id: int
    author: str
    text: str
    at_ms: int
    nonce: str | None = None
    # Schema 6 (living messages): ``kind`` 0 is a message; 1–4 are changes
    # (see ``changes.ChangeKind``) to the message ``target_id``, which take
    # their own id and seq so that they are ordered with the room's messages.
    kind: int = 0
    target_id: int | None = None
    reply_to: int | None = None
    edited_ms: int | None = None
    deleted_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ReactionRecord:
    """One user's reaction to a message (schema 6); unique per message, user and emoji."""

    id: int
    message_id: int
    user_id: int
    emoji: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class HighWater:
    """The largest id each table ever handed out (deleted rows included).

    ``copy`` carries it to the target so that ids are never reused there either.
    """

    users: int
    rooms: int
    messages: int


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """An account with the admin role (schema 3; written by ``clubroom-server users``)."""

    user_id: int
    granted_ms: int


@dataclass(frozen=True, slots=True)
class RoomStateRecord:
    """A room's owner and topic (schema 5): ``load`` sets them on the room already copied."""

    id: int
    owner_id: int | None
    topic: str


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    """A user's membership of a room, with the read marker (schema 5)."""

    room_id: int
    user_id: int
    joined_ms: int
    read_up_to: int


@dataclass(frozen=True, slots=True)
class MentionRecord:
    """One mention of a member in a message (schema 5)."""

    user_id: int
    room_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A username banned from a room (schema 5)."""

    room_id: int
    user_key: str
    username: str


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    """An invitation into a private room not taken up yet (schema 5)."""

    room_id: int
    user_key: str
    by_name: str


DumpBatch = (
    list[UserRecord]
    | list[TokenRecord]
    | list[RoomRecord]
    | list[MessageRecord]
    | list[AdminRecord]
    | list[ReactionRecord]
    | list[RoomStateRecord]
    | list[MembershipRecord]
    | list[MentionRecord]
    | list[BanRecord]
    | list[InvitationRecord]
)


class Table:
    """Where a record type is stored: its table, columns (= field names) and paging key.

    The paging key is the first ``key_size`` columns (a composite primary key
    pages as a row value). ``update`` tables hold columns of rows another
    table inserted (a room's owner and topic): ``load`` sets them instead.
    """

    def __init__(
        self, record: type, name: str, key: str, key_size: int = 1, update: bool = False
    ) -> None:
        self.record = record
        self.name = name
        self.key = key
        self.key_size = key_size
        self.update = update
        self.columns = tuple(f.name for f in fields(record))
        assert self.columns[:key_size] == tuple(key.split(", ")), "the key comes first"

    def insert(self, placeholders: list[str]) -> str:
        """``INSERT`` (or, for an ``update`` table, ``UPDATE``) of every column, with the
        backend's numbered placeholders (``?1`` / ``$1``: the UPDATE takes them out of order)."""
        if self.update:
            pairs = zip(self.columns[self.key_size :], placeholders[self.key_size :], strict=True)
            sets = ", ".join(f"{column} = {mark}" for column, mark in pairs)
            keys = zip(self.columns[: self.key_size], placeholders, strict=False)
            where = " AND ".join(f"{column} = {mark}" for column, mark in keys)
            return f"UPDATE {self.name} SET {sets} WHERE {where}"
        columns, values = ", ".join(self.columns), ", ".join(placeholders)
        return f"INSERT INTO {self.name} ({columns}) VALUES ({values})"

    def page(self, after: list[str], limit: str) -> str:
        """``SELECT`` of up to ``limit`` rows past the key ``after`` (keyset paging)."""
        key, marks = self.key, ", ".join(after)
        if self.key_size > 1:
            key, marks = f"({key})", f"({marks})"
        return (
            f"SELECT {', '.join(self.columns)} FROM {self.name} "
            f"WHERE {key} > {marks} ORDER BY {self.key} LIMIT {limit}"
        )

    @property
    def first_key(self) -> tuple[Any, ...]:
        """A key below every stored one."""
        kinds = [f.type for f in fields(self.record)][: self.key_size]
        return tuple("" if kind in (str, "str") else 0 for kind in kinds)

    def key_of(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """The paging key of a fetched row."""
        return tuple(row[: self.key_size])

    @staticmethod
    def row(record: Any) -> tuple[Any, ...]:
        return astuple(record)


# In the order ``dump`` yields and ``load`` can insert them (references first).
TABLES = (
    Table(UserRecord, "users", "id"),
    Table(TokenRecord, "tokens", "hash"),
    Table(RoomRecord, "rooms", "id"),
    Table(MessageRecord, "messages", "id"),
    Table(AdminRecord, "admins", "user_id"),
    Table(ReactionRecord, "reactions", "id"),
    Table(RoomStateRecord, "rooms", "id", update=True),
    Table(MembershipRecord, "memberships", "room_id, user_id", 2),
    Table(MentionRecord, "mentions", "user_id, room_id, message_id", 3),
    Table(BanRecord, "bans", "room_id, user_key", 2),
    Table(InvitationRecord, "invitations", "room_id, user_key", 2),
)
TABLE_OF = {table.record: table for table in TABLES}

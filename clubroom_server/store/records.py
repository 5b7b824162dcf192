"""What the store hands out and takes in: plain, frozen dataclasses, no rows.

Every backend returns exactly these, so the chat logic (and the tests) never
see a database type.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class HighWater:
    """The largest id each table ever handed out (deleted rows included).

    ``copy`` carries it to the target so that ids are never reused there either.
    """

    users: int
    rooms: int
    messages: int


DumpBatch = list[UserRecord] | list[TokenRecord] | list[RoomRecord] | list[MessageRecord]


class Table:
    """Where a record type is stored: its table, columns (= field names) and paging key."""

    def __init__(self, record: type, name: str, key: str) -> None:
        self.record = record
        self.name = name
        self.key = key
        self.columns = tuple(f.name for f in fields(record))

    def insert(self, placeholders: list[str]) -> str:
        """``INSERT`` of every column, with the backend's placeholders."""
        columns, values = ", ".join(self.columns), ", ".join(placeholders)
        return f"INSERT INTO {self.name} ({columns}) VALUES ({values})"

    def page(self, after: str, limit: str) -> str:
        """``SELECT`` of up to ``limit`` rows past the key ``after`` (keyset paging)."""
        return (
            f"SELECT {', '.join(self.columns)} FROM {self.name} "
            f"WHERE {self.key} > {after} ORDER BY {self.key} LIMIT {limit}"
        )

    @property
    def first_key(self) -> Any:
        """A key below every stored one."""
        return "" if self.key == "hash" else 0

    @staticmethod
    def row(record: Any) -> tuple[Any, ...]:
        return astuple(record)


# In the order ``dump`` yields and ``load`` can insert them (references first).
TABLES = (
    Table(UserRecord, "users", "id"),
    Table(TokenRecord, "tokens", "hash"),
    Table(RoomRecord, "rooms", "id"),
    Table(MessageRecord, "messages", "id"),
)
TABLE_OF = {table.record: table for table in TABLES}

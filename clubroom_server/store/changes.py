"""Changes to stored messages (edit, delete, react), in the store's terms.

Both backends apply a change in one transaction, under the room's lock: they
read the message, ask ``refusal`` whether the change is allowed, write it,
and store a *change row* (a ``messages`` row of kind > 0, with no text) that
takes the next id and the room's next ``seq``. So a change is ordered with
the room's messages in commit order, and everything that follows the room
by id or by seq (``after`` resumes, the cluster) sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from clubroom_server.store.interface import StoreError
from clubroom_server.store.records import MessageRecord

MAX_REACTIONS_PER_MESSAGE = 20


class ChangeKind(IntEnum):
    """``messages.kind``: 0 is a message, the others are changes to one."""

    MESSAGE = 0
    EDIT = 1
    DELETE = 2
    REACT = 3
    UNREACT = 4


class ChangeRefused(StoreError):
    """The change is not allowed; ``reason`` names the rule (never the text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


NOT_FOUND = "not_found"
DELETED = "deleted"
NOT_AUTHOR = "not_author"
TOO_MANY_REACTIONS = "too_many_reactions"


@dataclass(frozen=True, slots=True)
class MessageChange:
    """What a user asks to change: ``text`` for an edit, ``emoji`` for a reaction."""

    kind: ChangeKind
    room_id: int
    message_id: int
    user_id: int
    username: str
    at_ms: int
    text: str = ""
    emoji: str = ""
    # The asker owns the room: a room owner may delete anyone's message there.
    by_owner: bool = False


@dataclass(frozen=True, slots=True)
class ReactionCount:
    """One emoji on a message: how many reacted with it, and whether the asker did."""

    emoji: str
    count: int
    mine: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A stored change: its own row (``None`` when nothing changed), the message after it.

    Adding a reaction the user already gave, or removing one they did not,
    changes nothing: no row, no event, and the reply shows the message as is.
    """

    row: MessageRecord | None
    message: MessageRecord
    reactions: list[ReactionCount] = field(default_factory=list)
    change: MessageChange | None = None


def refusal(change: MessageChange, target: MessageRecord | None) -> str | None:
    """Why ``change`` may not apply to ``target`` (None: it may)."""
    if target is None or target.kind != ChangeKind.MESSAGE or target.room_id != change.room_id:
        return NOT_FOUND
    if target.deleted_ms is not None:
        return DELETED
    if target.author_id != change.user_id and (
        change.kind == ChangeKind.EDIT or (change.kind == ChangeKind.DELETE and not change.by_owner)
    ):
        return NOT_AUTHOR
    return None


def change_row(change: MessageChange, row_id: int, seq: int) -> MessageRecord:
    """The row that records ``change`` in the room's order (no message text; an emoji)."""
    return MessageRecord(
        id=row_id,
        room_id=change.room_id,
        seq=seq,
        author_id=change.user_id,
        author=change.username,
        text=change.emoji,  # a reaction's emoji (never message text), else ""
        at_ms=change.at_ms,
        kind=int(change.kind),
        target_id=change.message_id,
    )


def counted(rows: list[tuple[int, str, int, bool]]) -> dict[int, list[ReactionCount]]:
    """``(message_id, emoji, count, mine)`` rows, grouped by message, first reacted first."""
    grouped: dict[int, list[ReactionCount]] = {}
    for message_id, emoji, count, mine in rows:
        grouped.setdefault(message_id, []).append(ReactionCount(emoji, count, bool(mine)))
    return grouped


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message that matched a search."""

    message: MessageRecord

"""Messages that live: edit, delete, react, reply excerpts, search, and catching up.

The request handlers for ``edit``, ``delete``, ``react`` and ``search`` (plugged
into ``ChatService`` like the admin requests), and how a stored message
becomes a wire ``Message`` with its edit time, tombstone, reply excerpt and
reaction counts.

Ordering: every change is stored as a change row with its own id and the
room's next seq (``store.changes``), and announced as a ``message_changed``
event with that id as its ``position``, through the same ordered path as new
messages. A ``join_room`` with ``after`` lists the rows after it: new messages
as they are now, and the current state of earlier messages that changed
(``changes``), with the ``cursor`` to resume from. So one dense seq per room,
in commit order, stays the only ordering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

import protocol
from clubroom_server import search
from clubroom_server.auth import TokenBucket
from clubroom_server.peer import Peer
from clubroom_server.rooms import Room
from clubroom_server.store import MessageRecord, SearchTooSlow, Store
from clubroom_server.store.changes import (
    DELETED,
    NOT_AUTHOR,
    NOT_FOUND,
    ChangeKind,
    ChangeRecord,
    ChangeRefused,
    MessageChange,
    ReactionCount,
)
from protocol import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from clubroom_server.service import ChatService, Handler

ChangeName = Literal["edited", "deleted", "reacted", "unreacted"]
CHANGE_NAMES: dict[ChangeKind, ChangeName] = {
    ChangeKind.EDIT: "edited",
    ChangeKind.DELETE: "deleted",
    ChangeKind.REACT: "reacted",
    ChangeKind.UNREACT: "unreacted",
}
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A page of a room after a position: new messages, changed earlier ones, where it ends."""

    messages: list[protocol.Message]
    changes: list[protocol.Message]
    cursor: int
    more: bool


def wire(
    room: Room,
    record: MessageRecord,
    reactions: Sequence[ReactionCount] = (),
    reply: protocol.ReplyRef | None = None,
) -> protocol.Message:
    """A stored message as it travels: optional fields only where they say something."""
    return protocol.Message(
        id=record.id,
        room=room.name,
        author=record.author,
        text=record.text,
        at=protocol.format_time(record.at_ms),
        edited_at=None if record.edited_ms is None else protocol.format_time(record.edited_ms),
        deleted=record.deleted_ms is not None,
        reply_to=reply,
        reactions=[protocol.Reaction(r.emoji, r.count, r.mine) for r in reactions] or None,
    )


def reply_ref(record: MessageRecord) -> protocol.ReplyRef:
    """What a reply shows of the message it answers (nothing of a deleted one's text)."""
    if record.deleted_ms is not None:
        return protocol.ReplyRef(id=record.id, author=record.author, deleted=True)
    return protocol.ReplyRef(
        id=record.id, author=record.author, excerpt=record.text[: protocol.EXCERPT_LENGTH]
    )


class MessageLife:
    """Handlers for the living-message requests, and the presentation the service uses."""

    def __init__(self, service: ChatService, store: Store, search_rate: float, burst: int):
        self._service = service
        self._store = store
        self.search_bucket = TokenBucket(search_rate, burst)

    @property
    def handlers(self) -> dict[type, Handler]:
        return {
            protocol.Edit: self.edit,
            protocol.Delete: self.delete,
            protocol.React: self.react,
            protocol.Search: self.search,
        }

    # ---------------------------------------------------------------- changes

    async def edit(self, peer: Peer, request: protocol.Edit) -> protocol.Reply:
        room = self._service.joined_room(peer, request.room)
        text = protocol.check_text(request.text)
        return await self._change(peer, room, request, ChangeKind.EDIT, text=text)

    async def delete(self, peer: Peer, request: protocol.Delete) -> protocol.Reply:
        room = self._service.joined_room(peer, request.room)
        return await self._change(peer, room, request, ChangeKind.DELETE)

    async def react(self, peer: Peer, request: protocol.React) -> protocol.Reply:
        room = self._service.joined_room(peer, request.room)
        emoji = protocol.check_reaction(request.emoji)
        kind = ChangeKind.UNREACT if request.remove else ChangeKind.REACT
        return await self._change(peer, room, request, kind, emoji=emoji)

    async def _change(
        self,
        peer: Peer,
        room: Room,
        request: protocol.Edit | protocol.Delete | protocol.React,
        kind: ChangeKind,
        *,
        text: str = "",
        emoji: str = "",
    ) -> protocol.Reply:
        """Apply the change in the store, announce it in the room's order, answer ``changed``."""
        assert peer.user is not None
        await self._service.take_send(peer)
        target = await self._message(room, request.message)
        reply = await self._reply_of(room, target)
        change = MessageChange(
            kind, room.id, request.message, peer.user.id, peer.user.username,
            self._service.now(), text, emoji, by_owner=room.owner_key == peer.user_key,
        )  # fmt: skip

        def announce(result: ChangeRecord) -> None:
            if result.row is None:
                return  # a reaction given twice, or taken back when not given: no change
            counts = [ReactionCount(r.emoji, r.count) for r in result.reactions]
            event = protocol.MessageChanged(
                room=room.name,
                change=CHANGE_NAMES[kind],
                by=peer.username,
                position=result.row.id,
                message=wire(room, result.message, counts, reply),
                emoji=emoji or None,
            )
            self._service.announce(room, result.row, protocol.encode(event))

        try:
            result = await self._store.change_message(change, announce)
        except ChangeRefused as exc:
            raise _refused(exc.reason, kind, request.message, room) from None
        message = wire(room, result.message, result.reactions, reply)
        return protocol.Changed(id=request.id, room=room.name, message=message)

    async def _message(self, room: Room, message_id: int) -> MessageRecord:
        """The message ``message_id`` of the room (``no_such_message`` if there is none)."""
        found = await self._store.messages_by_id(room.id, [message_id])
        if not found or found[0].kind != ChangeKind.MESSAGE:
            raise _refused(NOT_FOUND, ChangeKind.MESSAGE, message_id, room)
        return found[0]

    async def _reply_of(self, room: Room, record: MessageRecord) -> protocol.ReplyRef | None:
        if record.reply_to is None:
            return None
        return (await self._reply_refs(room, [record])).get(record.reply_to)

    # ---------------------------------------------------------------- replies

    async def reply_target(self, room: Room, message_id: int) -> protocol.ReplyRef:
        """The excerpt a new reply to ``message_id`` carries; the target must be live."""
        target = await self._message(room, message_id)
        if target.deleted_ms is not None:
            raise _refused(DELETED, ChangeKind.MESSAGE, message_id, room)
        return reply_ref(target)

    async def _reply_refs(
        self, room: Room, records: Sequence[MessageRecord]
    ) -> dict[int, protocol.ReplyRef]:
        wanted = sorted({r.reply_to for r in records if r.reply_to is not None})
        targets = await self._store.messages_by_id(room.id, wanted)
        return {target.id: reply_ref(target) for target in targets}

    # ----------------------------------------------------------- presentation

    async def present(
        self, room: Room, records: Sequence[MessageRecord], user_id: int
    ) -> list[protocol.Message]:
        """Messages as the asking user sees them: replies' excerpts, reactions and their own."""
        if not records:
            return []
        refs = await self._reply_refs(room, records)
        counts = await self._store.reactions([r.id for r in records], user_id)
        return [
            wire(
                room,
                record,
                counts.get(record.id, ()),
                None if record.reply_to is None else refs.get(record.reply_to),
            )
            for record in records
        ]

    async def catch_up(self, room: Room, after: int, user_id: int) -> CatchUp:
        """The rows after ``after``, as new messages and changed earlier ones, cut by size.

        A change row names its message; a message newer than ``after`` is in
        this page already (as it is now), an older one is listed in
        ``changes`` once, as it is now. The cursor is the last row covered.
        """
        rows, more = await self._store.messages_after(room.id, after, protocol.JOIN_AFTER_MAX)
        earlier = sorted(
            {r.target_id for r in rows if r.target_id is not None and r.target_id <= after}
        )
        targets = await self._store.messages_by_id(room.id, earlier)
        fresh = [r for r in rows if r.kind == ChangeKind.MESSAGE]
        shown = {m.id: m for m in await self.present(room, [*fresh, *targets], user_id)}
        messages: list[protocol.Message] = []
        changes: dict[int, protocol.Message] = {}
        cursor, used = after, 0
        for row in rows:
            item = shown.get(row.id if row.kind == ChangeKind.MESSAGE else row.target_id or 0)
            if item is not None and not (row.kind and (item.id in changes or item.id > after)):
                used += len(_encoder.encode(item)) + 1
                if (messages or changes) and used > protocol.REPLY_BUDGET_BYTES:
                    more = True
                    break
                if row.kind == ChangeKind.MESSAGE:
                    messages.append(item)
                else:
                    changes[item.id] = item
            cursor = row.id
        return CatchUp(messages, list(changes.values()), cursor, more)

    async def events_of(self, room: Room, rows: Sequence[MessageRecord]) -> list[bytes]:
        """The events stored rows were announced with, rebuilt (a cluster fills gaps so).

        A change row's event shows its message as it is now, which is what
        every later event would show anyway.
        """
        earlier = sorted({r.target_id for r in rows if r.target_id is not None})
        targets = await self._store.messages_by_id(room.id, earlier)
        fresh = [r for r in rows if r.kind == ChangeKind.MESSAGE]
        shown = {m.id: m for m in await self.present(room, [*fresh, *targets], 0)}
        return [_event_of(room, row, shown) for row in rows]

    # ----------------------------------------------------------------- search

    async def search(self, peer: Peer, request: protocol.Search) -> protocol.Reply:
        """A page of the joined room's messages that contain every word of the query."""
        assert peer.user is not None
        room = self._service.joined_room(peer, request.room)
        phrases = search.parse_query(request.query)
        self._service.take(self.search_bucket, peer)
        try:
            hits, more = await self._store.search_messages(
                room.id, phrases, request.order == "newest", request.offset, request.limit
            )
        except SearchTooSlow:
            raise search.too_slow() from None
        messages = await self.present(room, [hit.message for hit in hits], peer.user.id)
        results: list[protocol.SearchResult] = []
        used = 0
        for message in messages:
            result = protocol.SearchResult(message, search.highlights(message.text, phrases))
            used += len(_encoder.encode(result)) + 1
            if results and used > protocol.REPLY_BUDGET_BYTES:
                more = True
                break
            results.append(result)
        return protocol.SearchPage(id=request.id, room=room.name, results=results, more=more)


def _event_of(room: Room, row: MessageRecord, shown: dict[int, protocol.Message]) -> bytes:
    if row.kind == ChangeKind.MESSAGE:
        return protocol.encode(protocol.MessageEvent(message=shown[row.id]))
    kind = ChangeKind(row.kind)
    target = shown.get(row.target_id or 0)
    message = target or protocol.Message(
        id=row.target_id or 0, room=room.name, author="", text="", at=protocol.format_time(0),
        deleted=True,
    )  # fmt: skip
    event = protocol.MessageChanged(
        room=room.name,
        change=CHANGE_NAMES[kind],
        by=row.author,
        position=row.id,
        message=message,
        emoji=row.text if kind in (ChangeKind.REACT, ChangeKind.UNREACT) else None,
    )
    return protocol.encode(event)


def _refused(reason: str, kind: ChangeKind, message_id: int, room: Room) -> ProtocolError:
    """The error a refused change answers: which rule, in words (never the text)."""
    if reason == NOT_FOUND:
        return ProtocolError(
            ErrorCode.NO_SUCH_MESSAGE, f"There is no message {message_id} in {room.name!r}."
        )
    if reason == DELETED:
        return ProtocolError(
            ErrorCode.MESSAGE_DELETED, f"Message {message_id} was deleted; it cannot be used."
        )
    if reason == NOT_AUTHOR:
        verb = "edit" if kind == ChangeKind.EDIT else "delete"
        return ProtocolError(ErrorCode.FORBIDDEN, f"Only its author may {verb} a message.")
    return ProtocolError(
        ErrorCode.TOO_MANY_REACTIONS,
        f"A message has at most {protocol.MAX_REACTIONS_PER_MESSAGE} different reactions; "
        "add one of those already there.",
    )

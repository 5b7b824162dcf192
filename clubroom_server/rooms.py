"""Who is in which room: members per user, connections per member, fan-out, cleanup.

Everything here is synchronous and in memory, so a join, a leave and a
deletion can never interleave halfway: the registry is the single truth of
which rooms exist and who is in them, and the store only follows it. No SQL
and no network code live here; delivery is an injected function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import protocol
from clubroom_server.store import RoomRecord

log = logging.getLogger(__name__)


class Subscriber(Hashable, Protocol):
    """A connection as the rooms see it: an authenticated user's socket."""

    @property
    def username(self) -> str: ...

    @property
    def user_key(self) -> str: ...


Fanout = Callable[[Iterable[Subscriber], bytes], None]
# (room, username, user key): a member left *this node's* view of the room (cluster mode).
MemberGone = Callable[["Room", str, str], None]


@dataclass(eq=False)
class Member:
    """A user in a room, present while a connection of theirs has joined (or in grace)."""

    username: str
    connections: set[Subscriber] = field(default_factory=set)
    grace: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class Room:
    """One room's live state; ``live`` receive events, ``joining`` buffer them."""

    id: int
    name: str
    key: str
    members: dict[str, Member] = field(default_factory=dict)
    live: dict[Subscriber, None] = field(default_factory=dict)
    joining: dict[Subscriber, list[tuple[int, bytes]]] = field(default_factory=dict)
    floors: dict[Subscriber, int] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None
    deleted: bool = False
    owner_key: str = ""
    owner: str = ""
    topic: str = ""

    def member_names(self) -> list[str]:
        """Members in alphabetical order (keys are look-alike skeletons, not for sorting)."""
        return sorted((member.username for member in self.members.values()), key=str.casefold)


class Rooms:
    """The registry of rooms and the rules of presence and automatic cleanup."""

    def __init__(
        self,
        grace: float,
        fanout: Fanout,
        on_deleted: Callable[[Room], None],
        on_member_gone: MemberGone | None = None,
    ) -> None:
        """``on_member_gone`` set means a cluster node: this registry holds only the
        node's own connections, so who joined, who left and whether the room is
        empty are decided elsewhere (``presence``); then ``on_deleted`` means "no
        member on this node any more", not "delete the room".
        """
        self.grace = grace
        self._fanout = fanout
        self._on_deleted = on_deleted
        self._on_member_gone = on_member_gone
        self._rooms: dict[str, Room] = {}
        self._by_id: dict[int, Room] = {}
        # Told (room, user key) when a user stops being present in a room that
        # lives on (``conversation.Conversation`` hands ownership over).
        self.on_member_removed: Callable[[Room, str], None] | None = None

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def by_id(self, room_id: int) -> Room | None:
        """The live room with this id (a deleted and re-created room has a new id)."""
        return self._by_id.get(room_id)

    def all(self) -> list[Room]:
        return list(self._rooms.values())

    def fanout(self, subscribers: Iterable[Subscriber], data: bytes) -> None:
        """Deliver one encoded frame to some of a room's connections (typing, mentions)."""
        self._fanout(subscribers, data)

    def add(self, record: RoomRecord, *, expire_if_unjoined: bool = False) -> Room:
        """Register a room; a room restored after a restart lives one grace period unjoined."""
        room = Room(record.id, record.name, record.key)
        self._rooms[room.key] = room
        self._by_id[room.id] = room
        if expire_if_unjoined:
            room.expiry = _later(self.grace, self._expire_unjoined, room)
        return room

    def discard(self, room: Room) -> None:
        """Forget a room whose creation failed, without announcing anything."""
        if self._rooms.get(room.key) is room:
            del self._rooms[room.key]
        if self._by_id.get(room.id) is room:
            del self._by_id[room.id]
        room.deleted = True

    # ---------------------------------------------------------------- joining

    def attach(self, room: Room, subscriber: Subscriber) -> None:
        """Make a connection a member that buffers events until ``go_live``.

        A user new to the room is announced to the others; a user coming back
        within their grace period is not.
        """
        _cancel(room.expiry)
        room.expiry = None
        room.live.pop(subscriber, None)
        room.joining[subscriber] = []
        member = room.members.get(subscriber.user_key)
        if member is None:
            member = room.members[subscriber.user_key] = Member(subscriber.username)
            if self._on_member_gone is None:
                self.announce(room, protocol.MemberJoined(room=room.name, username=member.username))
        _cancel(member.grace)
        member.grace = None
        member.connections.add(subscriber)

    def go_live(self, room: Room, subscriber: Subscriber, last_id: int, live: bool) -> None:
        """After the ``joined`` reply: deliver what arrived meanwhile, then stream events.

        Buffered messages the snapshot already held (id <= ``last_id``) are
        dropped, so snapshot plus events hold every message exactly once. A
        connection whose snapshot said ``more`` stays a silent member.
        """
        buffered = room.joining.pop(subscriber, [])
        member = room.members.get(subscriber.user_key)
        if not live or member is None or subscriber not in member.connections:
            return
        for message_id, data in buffered:
            if message_id > last_id:
                self._fanout((subscriber,), data)
        room.live[subscriber] = None
        # A message can be committed, read by the snapshot and only then
        # announced: the floor keeps such a message from arriving twice.
        room.floors[subscriber] = max(last_id, buffered[-1][0] if buffered else 0)

    # ---------------------------------------------------------------- leaving

    def detach(self, room: Room, subscriber: Subscriber, *, grace: bool) -> None:
        """Remove a connection; its user leaves when no connection of theirs remains.

        A dropped connection (``grace=True``) keeps the user a member for the
        grace period; an explicit leave takes effect at once.
        """
        room.live.pop(subscriber, None)
        room.joining.pop(subscriber, None)
        room.floors.pop(subscriber, None)
        member = room.members.get(subscriber.user_key)
        if member is None or subscriber not in member.connections:
            return
        member.connections.discard(subscriber)
        if member.connections:
            return
        if grace and self.grace > 0:
            member.grace = _later(self.grace, self._grace_expired, room, subscriber.user_key)
        else:
            self._remove_member(room, subscriber.user_key)

    def remove_member(self, room: Room, user_key: str) -> None:
        """Remove a user now, grace or not (a kick); cleanup applies as after a leave."""
        if user_key in room.members and not room.deleted:
            self._remove_member(room, user_key)

    def _grace_expired(self, room: Room, user_key: str) -> None:
        member = room.members.get(user_key)
        if member is not None and not member.connections and not room.deleted:
            self._remove_member(room, user_key)

    def _remove_member(self, room: Room, user_key: str) -> None:
        member = room.members.pop(user_key)
        _cancel(member.grace)
        if self._on_member_gone is not None:
            self._on_member_gone(room, member.username, user_key)
            if not room.members:
                self._delete(room)
        elif room.members:
            self.announce(room, protocol.MemberLeft(room=room.name, username=member.username))
            if self.on_member_removed is not None:
                self.on_member_removed(room, user_key)
        else:
            self._delete(room)

    def _expire_unjoined(self, room: Room) -> None:
        room.expiry = None
        if not room.members and not room.deleted:
            log.info("room %r was not rejoined after the restart; deleting it", room.name)
            self._delete(room)

    def _delete(self, room: Room) -> None:
        """The last member left: the name is free at once; the store deletes the rows."""
        self.discard(room)
        _cancel(room.expiry)
        self._on_deleted(room)

    # --------------------------------------------------------------- delivery

    def publish_message(self, room: Room, message_id: int, data: bytes) -> None:
        """Deliver a stored message's event to live connections; buffer it for joiners."""
        if room.deleted:
            return
        for buffer in room.joining.values():
            buffer.append((message_id, data))
        if room.floors:
            self._fanout(_above_floor(room, message_id), data)
        else:
            self._fanout(room.live, data)

    def announce(self, room: Room, event: protocol.Event) -> None:
        """Member events go to live connections only: joiners learn members from ``joined``."""
        if room.live:
            self._fanout(room.live, protocol.encode(event))

    def forward(self, room: Room, data: bytes) -> None:
        """An encoded member event from another node, for this node's live connections."""
        if room.live and not room.deleted:
            self._fanout(room.live, data)

    def close(self) -> None:
        """Cancel every timer (server shutdown): stored rooms get a new grace on restart."""
        for room in self._rooms.values():
            _cancel(room.expiry)
            for member in room.members.values():
                _cancel(member.grace)


def _above_floor(room: Room, message_id: int) -> list[Subscriber]:
    """Live subscribers that have not seen ``message_id`` yet; floors passed are dropped.

    Messages are announced in id order, so once one above a floor goes out,
    that floor can never matter again.
    """
    seen = {s for s, floor in room.floors.items() if message_id <= floor}
    for subscriber, floor in list(room.floors.items()):
        if message_id >= floor:
            del room.floors[subscriber]
    return [s for s in room.live if s not in seen]


def _later(delay: float, callback: Callable[..., None], *args: object) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback, *args)


def _cancel(handle: asyncio.TimerHandle | None) -> None:
    if handle is not None:
        handle.cancel()

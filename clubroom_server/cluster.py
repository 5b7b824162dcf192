"""A cluster node: the same chat, with delivery and presence shared through Redis and PostgreSQL.

Single process (no ``--bus``): nothing here exists; a commit goes straight to
the room registry and presence lives in ``rooms.py``, as fast as before.

A cluster node (``ClusterNode``) plugs three things into the chat:

* **Delivery.** Every message this node stores is published on the bus right
  after its commit (the store calls ``stored`` in commit order) and offered
  to this node's ``OrderedDelivery`` at once, so local members do not wait
  for Redis. Other nodes' messages arrive from the bus and go through the
  same ``OrderedDelivery``: the first copy is delivered, in the room's
  ``seq`` order, gaps are read from the database, duplicates dropped. The
  registry (``rooms.py``) then does what it does on one process: buffer for
  joiners, floors against the snapshot, fan-out.
* **Serving a room.** A node serves a room while one of its connections is
  in it: subscribed to the room's channel, and anchored at the message the
  room had reached once the subscription was active — so a joiner's
  snapshot (read after that) and the events that follow it meet exactly.
* **Presence.** ``rooms.py`` keeps only this node's connections and grace
  timers; who is a member cluster-wide, who is new, who left and whether the
  room is now empty is decided in the database (``presence.py``), and the
  resulting ``member_joined`` / ``member_left`` travel on the bus as
  unsequenced events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence

import protocol
from clubroom_server.auth import TokenBucket
from clubroom_server.bus import NODE_WIDE, Bus, BusEvent
from clubroom_server.limits import SharedLimits
from clubroom_server.ordering import Clock, OrderedDelivery, Sequenced
from clubroom_server.presence import ClusterMembers
from clubroom_server.rooms import Room, Rooms, Subscriber
from clubroom_server.store import MessageRecord, Store

log = logging.getLogger(__name__)

FILL_PAGE = 500  # messages read per round trip when filling a gap

# The events of stored rows (messages and change rows), read back to fill a gap.
EncodeRows = Callable[[Room, Sequence[MessageRecord]], Awaitable[list[bytes]]]
SESSION_ENDED = b"session-ended "
TO_USER = b"to-user "  # + JSON [action, user key, room key or ""] + newline + event
PRESENCE = b"presence "  # + version + newline + a member_joined / member_left event
EXCEPT_USER = b"except-user "  # + JSON username + newline + a room event not for that user

# A per-user event from another node: (action, user key, room key or "", event bytes).
UserEventHandler = Callable[[str, str, str, bytes], None]


class RoomGone(Exception):
    """The room was deleted (its last member left on another node) before this join took."""


class ClusterNode:
    """Glue between the store, the bus, cluster presence and this node's registry."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        members: ClusterMembers,
        node_id: str,
        limits: SharedLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._store = store
        self.members = members
        self.node_id = node_id
        self.limits = limits
        self.order = OrderedDelivery(self._in_order, self._fetch_after, clock, settle=bus.caught_up)
        self._rooms: Rooms | None = None
        self._encode: EncodeRows | None = None
        self._session_ended: Callable[[str], None] = lambda token_hash: None
        self.on_user_event: UserEventHandler = lambda action, user, room, data: None
        self.on_members_left: Callable[[int, str, list[str]], None] = lambda *left: None
        # Member events are ordered by their presence version (store/presence.py).
        # Per room: each connection's floor (the version its member list was read
        # at) and, until its ``joined`` is out, the member events held for it.
        self._floors: dict[int, dict[Subscriber, int]] = {}
        self._held: dict[int, dict[Subscriber, list[tuple[int, bytes]]]] = {}

    def bind(self, rooms: Rooms, encode: EncodeRows, session_ended: Callable[[str], None]) -> None:
        """Attach the registry this node delivers to, and what to do when another node
        ends a session (built by the service)."""
        self._rooms, self._encode, self._session_ended = rooms, encode, session_ended

    async def start(self) -> None:
        await self.members.start()
        try:
            await self._bus.start(self._heard, self.order.resync)
        except BaseException:
            await self.members.close()
            raise

    async def close(self) -> None:
        """After the clients are gone: stop delivery, hand memberships to the grace."""
        self.order.close()
        await self.order.wait_idle()
        await self._bus.close()
        await self.members.close()
        if self.limits is not None:
            await self.limits.close()

    def problems(self) -> list[str]:
        """What keeps this node from serving fully (``/healthz`` answers 503 while any)."""
        found = []
        if not self.members.healthy:
            found.append("database: the cluster lease cannot be renewed")
        if not self._bus.healthy:
            found.append("bus: Redis is out of reach")
        return found

    @property
    def registry(self) -> Rooms:
        assert self._rooms is not None, "bind() first"
        return self._rooms

    # ----------------------------------------------------------------- rooms

    async def find_room(self, key: str) -> Room | None:
        """A room another node created (this node's registry holds only rooms it serves)."""
        record = await self.members.find_room(key)
        if record is None:
            return None
        return self.registry.get(key) or self.registry.add(record)

    async def enter(self, room: Room, subscriber: Subscriber) -> list[str]:
        """After ``attach``: serve the room, record the membership, announce a new member.

        Returns the room's members cluster-wide for the ``joined`` reply.
        Raises ``RoomGone`` if the room was deleted meanwhile, ``BusUnavailable``
        or a ``StoreError`` if a shared part is down (nothing is recorded then).
        """
        self._held.setdefault(room.id, {})[subscriber] = []
        await self._serve(room.id)
        joined = await self.members.join(room.id, subscriber.user_key, subscriber.username)
        if joined is None:
            raise RoomGone(room.name)
        self._floors.setdefault(room.id, {})[subscriber] = joined.version
        if joined.new_member:
            event = protocol.MemberJoined(room=room.name, username=subscriber.username)
            self._member_event(room, joined.version, protocol.encode(event))
        return joined.members

    def went_live(self, room: Room, subscriber: Subscriber) -> None:
        """After ``joined``: the member events held meanwhile that are news to its list."""
        held = self._held.get(room.id, {}).pop(subscriber, [])
        floor = self._floors.get(room.id, {}).get(subscriber)
        if floor is None or subscriber not in room.live:
            return
        for version, data in sorted(held, key=lambda item: item[0]):
            if version > floor:
                self.registry.fanout((subscriber,), data)

    def _member_event(self, room: Room, version: int, data: bytes) -> None:
        """A member event of ours: this node's connections, and every other node's."""
        self._deliver_member_event(room, version, data)
        payload = PRESENCE + str(version).encode() + b"\n" + data
        self._bus.publish(BusEvent(room.id, 0, 0, payload, self.node_id))

    def _deliver_member_event(self, room: Room, version: int, data: bytes) -> None:
        """To live connections whose member list predates it; held for those joining.

        So a joiner's list plus the events it then gets name each member once:
        an event its list already reflects is dropped, a later one is never
        lost while its ``joined`` is being prepared.
        """
        if room.deleted:
            return
        floors = self._floors.get(room.id, {})
        news = [c for c in room.live if floors.get(c, 0) < version]
        if news:
            self.registry.fanout(news, data)
        for held in self._held.get(room.id, {}).values():
            held.append((version, data))

    def broadcast(self, room: Room, data: bytes, except_user: str | None = None) -> None:
        """A room event that is not a message (topic, typing): this node's and every node's
        live connections, except those of the user named ``except_user`` (a typist's own)."""
        self._forward(room, data, except_user)
        if except_user is not None:
            data = EXCEPT_USER + json.dumps(except_user).encode() + b"\n" + data
        self._bus.publish(BusEvent(room.id, 0, 0, data, self.node_id))

    def _forward(self, room: Room, data: bytes, except_user: str | None) -> None:
        if except_user is None:
            self.registry.forward(room, data)
        elif room.live and not room.deleted:
            others = [c for c in room.live if c.username != except_user]
            if others:
                self.registry.fanout(others, data)

    def _heard_room_event(self, room: Room, data: bytes) -> None:
        if data.startswith(PRESENCE):
            header, _, event = data[len(PRESENCE) :].partition(b"\n")
            try:
                version = int(header)
            except ValueError:
                log.warning("ignored a malformed member event from the bus")
                return
            self._deliver_member_event(room, version, event)
            return
        if not data.startswith(EXCEPT_USER):
            self.registry.forward(room, data)
            return
        header, _, event = data[len(EXCEPT_USER) :].partition(b"\n")
        try:
            except_user = str(json.loads(header))
        except ValueError:
            log.warning("ignored a malformed room event from the bus")
            return
        self._forward(room, event, except_user)

    def forget_connection(self, room: Room, subscriber: Subscriber) -> None:
        """A connection taken out of the room mid-join (a kick): drop its floor and held events."""
        self._floors.get(room.id, {}).pop(subscriber, None)
        self._held.get(room.id, {}).pop(subscriber, None)

    def connection_gone(self, room: Room) -> None:
        """A connection left the room: stop hearing it if none of ours is in it any more."""
        for table in (self._floors.get(room.id, {}), self._held.get(room.id, {})):
            for gone in [c for c in table if c not in room.live and c not in room.joining]:
                del table[gone]
        if not room.live and not room.joining:
            self._release(room.id)

    async def settled(self, room: Room, subscriber: Subscriber) -> None:
        """Wait for this node's pending leave of the user from the room to be recorded."""
        await self.members.settled(room.id, subscriber.user_key)

    def member_gone(self, room: Room, username: str, user_key: str) -> None:
        """``rooms.py``: no connection or grace of the user is left here (hook)."""
        self.members.leave(room.id, room.name, user_key, username)

    def room_unused(self, room: Room) -> None:
        """``rooms.py``: no member of the room is left on this node (hook)."""
        self._release(room.id)

    def members_left(
        self, room_id: int, room_name: str, usernames: list[str], version: int = 0
    ) -> None:
        """The database says these users left the room cluster-wide: tell every node."""
        room = self.registry.by_id(room_id)
        for username in usernames:
            data = protocol.encode(protocol.MemberLeft(room=room_name, username=username))
            if room is not None:
                self._deliver_member_event(room, version, data)
            payload = PRESENCE + str(version).encode() + b"\n" + data
            self._bus.publish(BusEvent(room_id, 0, 0, payload, self.node_id))
        self.on_members_left(room_id, room_name, usernames)

    async def _serve(self, room_id: int) -> None:
        """Subscription active first, then the anchor read (see the module docstring)."""
        if self.order.last_delivered(room_id) is not None:
            return
        self.order.track(room_id)
        try:
            await self._bus.subscribe(room_id)
            last = await self._store.last_row(room_id)  # a message or a change
        except BaseException:
            self._release(room_id)
            raise
        self.order.anchor(room_id, last.seq if last else 0, last.id if last else 0)

    def _release(self, room_id: int) -> None:
        self._floors.pop(room_id, None)
        self._held.pop(room_id, None)
        self.order.forget(room_id)
        self._bus.unsubscribe(room_id)

    # -------------------------------------------------------------- messages

    async def send_wait(self, user_key: str, local: TokenBucket) -> float | None:
        """The per-user message rate (``local``'s rate and burst), cluster-wide: None, or
        seconds until a send is allowed."""
        if self.limits is None or local.rate <= 0:
            return None
        return await self.limits.take("send", user_key, local.rate, local.burst)

    def stored(self, record: MessageRecord, data: bytes) -> None:
        """This node committed a message (called in commit order): publish, deliver locally."""
        self._bus.publish(BusEvent(record.room_id, record.seq, record.id, data, self.node_id))
        self.order.offer(record.room_id, Sequenced(record.seq, record.id, data))

    def end_session(self, token_hash: str) -> None:
        """A logout here: every node signs out its connections using that token."""
        data = SESSION_ENDED + token_hash.encode("ascii")
        self._bus.publish(BusEvent(NODE_WIDE, 0, 0, data, self.node_id))

    def to_user(self, action: str, user_key: str, room_key: str, data: bytes) -> None:
        """A per-user event (read, mention, invited; a kick) for the user's connections on
        every other node, over the node-wide channel (a user's connections may be anywhere).

        ``action`` says what the receiving node does with ``data`` (``send`` it,
        or ``remove`` the user from the room, telling them with it); ``room_key``
        limits it to the user's connections in that room ("" for all of them).
        The caller handles this node's own connections.
        """
        header = json.dumps([action, user_key, room_key]).encode()
        payload = TO_USER + header + b"\n" + data
        self._bus.publish(BusEvent(NODE_WIDE, 0, 0, payload, self.node_id))

    def _heard_to_user(self, payload: bytes) -> None:
        header, _, data = payload[len(TO_USER) :].partition(b"\n")
        try:
            action, user_key, room_key = json.loads(header)
        except (ValueError, TypeError):
            log.warning("ignored a malformed per-user event from the bus")
            return
        self.on_user_event(str(action), str(user_key), str(room_key), data)

    def _heard(self, event: BusEvent) -> None:
        if event.room_id == NODE_WIDE:
            if event.data.startswith(SESSION_ENDED):
                self._session_ended(event.data[len(SESSION_ENDED) :].decode("ascii", "replace"))
            elif event.data.startswith(TO_USER):
                self._heard_to_user(event.data)
            return
        if event.seq != 0:
            self.order.offer(event.room_id, Sequenced(event.seq, event.message_id, event.data))
            return
        room = self.registry.by_id(event.room_id)
        if room is not None:
            self._heard_room_event(room, event.data)

    def _in_order(self, room_id: int, item: Sequenced) -> None:
        room = self.registry.by_id(room_id)
        if room is not None:
            self.registry.publish_message(room, item.message_id, item.data)

    async def _fetch_after(self, room_id: int, after_id: int) -> tuple[Sequence[Sequenced], bool]:
        room = self.registry.by_id(room_id)
        if room is None or self._encode is None:
            return [], False  # not served here any more
        records, more = await self._store.messages_after(room_id, after_id, FILL_PAGE)
        events = await self._encode(room, records)
        return [Sequenced(r.seq, r.id, data) for r, data in zip(records, events, strict=True)], more

"""A running server follows the admin actions taken on its database.

Every half second the server reads the ``admin_events`` written since it
last looked (one indexed query) and applies each: a disabled or deleted
user, a reset password or revoked sessions close that user's connections
(code 4001) and take them out of their rooms at once; a deleted room is
announced to its members (``room_deleted``) and forgotten. Every node of a
cluster follows the same table, so an action reaches all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import protocol
from clubroom_server import metrics
from clubroom_server.peer import Peer, PeerSet, fanout
from clubroom_server.rooms import Room, Rooms
from clubroom_server.store import StoreError
from clubroom_server.store.admin import AdminEvent, AdminStore, EventKind

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds: "at once" for an operator, nothing for the database

_ENDED: dict[str, str] = {
    EventKind.USER_DISABLED: "An administrator disabled this account.",
    EventKind.USER_DELETED: "An administrator deleted this account.",
    EventKind.SESSIONS_ENDED: "An administrator ended this session; please log in again.",
}
_closing: set[asyncio.Task[None]] = set()


class AdminFollower:
    """Applies ``admin_events`` to this server's connections and rooms."""

    def __init__(
        self, store: AdminStore, peers: PeerSet, rooms: Rooms, interval: float = POLL_INTERVAL
    ) -> None:
        self._store = store
        self._peers = peers
        self._rooms = rooms
        self.interval = interval
        self._last = 0
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._polling = asyncio.Lock()  # the loop and an admin request may poll at once

    async def start(self) -> None:
        """Start after the newest event: what happened before this start is in the data."""
        await self._store.require_admin_schema()
        self._last = await self._store.last_event_id()
        self._task = asyncio.create_task(self._follow(), name="admin-follower")

    async def close(self) -> None:
        """Stop by flag (never by cancelling a wait), then release the connection."""
        self._stopped.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._store.close()

    async def _follow(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stopped.wait()
            if self._stopped.is_set():
                return
            await self.poll()

    async def poll(self) -> None:
        """Apply every event since the last one applied (a failed read is retried next time)."""
        async with self._polling:
            await self._poll()

    async def _poll(self) -> None:
        try:
            events = await self._store.events_after(self._last)
        except StoreError as exc:
            if not self._failing:
                log.warning("cannot read admin actions (retrying): %s", exc)
            self._failing = True
            return
        self._failing = False
        for event in events:
            try:
                self.apply(event)
            except Exception:  # one odd event must not stop the next ones
                log.exception("applying admin action %d (%s) failed", event.id, event.kind)
            self._last = event.id

    def apply(self, event: AdminEvent) -> None:
        reason = _ENDED.get(event.kind)
        if reason is not None and event.user_id is not None:
            self._end_sessions(event.user_id, reason)
        elif event.kind == EventKind.ROOM_DELETED and event.room_name is not None:
            self._delete_room(event.room_id, event.room_name)

    def _end_sessions(self, user_id: int, reason: str) -> None:
        peers = [p for p in self._peers if p.user is not None and p.user.id == user_id]
        for peer in peers:
            _log_out(self._rooms, peer)
            task = asyncio.create_task(
                peer.websocket.close(protocol.CLOSE_SESSION_ENDED, reason),
                name="admin-close",
            )
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        if peers:
            log.info("admin action: closed %d connection(s) of user %d", len(peers), user_id)

    def _delete_room(self, room_id: int | None, name: str) -> None:
        room = self._rooms.get(protocol.room_key(name))
        if room is None or room.id != room_id:
            return
        connections = _forget(self._rooms, room)
        fanout(connections, protocol.encode(protocol.RoomDeleted(room=room.name)))
        metrics.ROOMS_DELETED_BY_ADMIN.inc()
        told = len(connections)
        log.info("admin action: room %r deleted; %d connection(s) told", room.name, told)


def _log_out(rooms: Rooms, peer: Peer) -> None:
    """Leave every room now (no grace: the user is gone) and drop the credentials."""
    for room in list(peer.rooms.values()):
        rooms.detach(room, peer, grace=False)
    peer.rooms.clear()
    peer.user, peer.token_hash = None, None


def _forget(rooms: Rooms, room: Room) -> list[Peer]:
    """Take a room out of the registry and out of every member connection; return them."""
    connections: list[Peer] = []
    for member in room.members.values():
        if member.grace is not None:
            member.grace.cancel()
        connections += member.connections  # type: ignore[arg-type]
    if room.expiry is not None:
        room.expiry.cancel()
    rooms.discard(room)
    for peer in connections:
        peer.rooms.pop(room.key, None)
    room.members.clear()
    room.live.clear()
    room.joining.clear()
    room.floors.clear()
    return connections

"""One WebSocket connection as the chat logic sees it, and fan-out to many.

Every frame a connection receives is written synchronously (``broadcast``),
so replies and events leave in exactly the order the logic produced them,
and nothing is awaited per recipient. A connection that stops reading is
closed once its outgoing buffer passes the limit (checked by a sweep),
instead of growing the server's memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

from websockets import broadcast
from websockets.asyncio.server import ServerConnection

import protocol
from clubroom_server.metrics import HOT, SLOW_CONSUMERS_CLOSED
from clubroom_server.rooms import Room
from clubroom_server.store import UserRecord

log = logging.getLogger(__name__)
SWEEP_INTERVAL = 0.25  # seconds between checks for clients that stopped reading
_closing_tasks: set[asyncio.Task[None]] = set()


class Peer:
    """A connection, the user it is authenticated as, and the rooms it has joined."""

    __slots__ = ("_closing", "address", "rooms", "send_limit", "token_hash", "user", "websocket")

    def __init__(self, websocket: ServerConnection, address: str, send_limit: int) -> None:
        self.websocket = websocket
        self.address = address
        self.send_limit = send_limit
        self.user: UserRecord | None = None
        self.token_hash: str | None = None
        self.rooms: dict[str, Room] = {}
        self._closing = False

    @property
    def username(self) -> str:
        return self.user.username if self.user else ""

    @property
    def user_key(self) -> str:
        return self.user.key if self.user else ""

    def send(self, data: bytes) -> None:
        """Queue one encoded frame for this connection, now (a reply: not counted as an event)."""
        broadcast((self.websocket,), data, text=True)

    def overloaded(self) -> bool:
        transport = self.websocket.transport
        return transport is not None and transport.get_write_buffer_size() > self.send_limit

    def close_slow(self) -> None:
        """Close a connection that does not read what it is sent (once)."""
        if not self._closing:
            SLOW_CONSUMERS_CLOSED.inc()
            log.warning("closing a slow consumer from %s", self.address)
        self._close(
            protocol.CLOSE_SLOW_CONSUMER,
            "Too far behind; reconnect and catch up with join_room after.",
        )

    def close_logged_out(self) -> None:
        """Close a connection whose session was ended by a logout on another connection."""
        self._close(protocol.CLOSE_LOGGED_OUT, "Logged out: this session was ended; log in again.")

    def close_with(self, code: int, reason: str) -> None:
        """Start closing with ``code`` (a cluster node draining or fenced), once."""
        self._close(code, reason)

    def _close(self, code: int, reason: str) -> None:
        """Start closing with ``code`` (once) without awaiting the closing handshake."""
        if self._closing:
            return
        self._closing = True
        task = asyncio.get_running_loop().create_task(self.websocket.close(code, reason))
        _closing_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_closing_tasks.discard)


def fanout(peers: Iterable[Peer], data: bytes) -> None:
    """Write one encoded frame to many connections without awaiting any of them.

    ``broadcast`` itself skips connections that are closing, so the hot path
    is one list and one call; slow readers are caught by ``PeerSet.sweep``.
    Deliveries are counted once per fan-out, with the number of recipients.
    """
    sockets = [peer.websocket for peer in peers]
    broadcast(sockets, data, text=True)
    HOT.events_delivered += len(sockets)


class PeerSet:
    """Every open connection, swept a few times a second for clients that stopped reading.

    Checking each recipient's buffer on every delivery cost more than the
    delivery itself; a sweep bounds a slow reader's buffer to the limit plus
    what it can be sent in one interval (rate limits keep that small).
    """

    def __init__(self, interval: float = SWEEP_INTERVAL) -> None:
        self.interval = interval
        self._peers: set[Peer] = set()

    def add(self, peer: Peer) -> None:
        self._peers.add(peer)

    def discard(self, peer: Peer) -> None:
        self._peers.discard(peer)

    def __len__(self) -> int:
        return len(self._peers)

    def using_token(self, token_hash: str | None) -> list[Peer]:
        """Every connection signed in with this token (a scan: logouts are rare)."""
        if token_hash is None:
            return []
        return [peer for peer in self._peers if peer.token_hash == token_hash]

    def __iter__(self) -> Iterator[Peer]:
        return iter(self._peers)

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection with ``code`` (a cluster node draining or fenced)."""
        for peer in list(self._peers):
            peer.close_with(code, reason)

    def sweep(self) -> None:
        """Close every connection whose outgoing buffer passed its limit."""
        for peer in [p for p in self._peers if p.overloaded()]:
            peer.close_slow()

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sweep()

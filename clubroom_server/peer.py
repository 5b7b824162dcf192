"""One WebSocket connection as the chat logic sees it, and fan-out to many.

Every frame a connection receives is written synchronously (``broadcast``),
so replies and events leave in exactly the order the logic produced them,
and nothing is awaited per recipient. A connection that stops reading is
closed once its outgoing buffer passes the limit, instead of growing the
server's memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from websockets import broadcast
from websockets.asyncio.server import ServerConnection

import protocol
from clubroom_server.rooms import Room
from clubroom_server.store import UserRecord

log = logging.getLogger(__name__)
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
        """Queue one encoded frame for this connection, now."""
        fanout((self,), data)

    def overloaded(self) -> bool:
        transport = self.websocket.transport
        return transport is not None and transport.get_write_buffer_size() > self.send_limit

    def close_slow(self) -> None:
        """Close a connection that does not read what it is sent (once)."""
        if self._closing:
            return
        self._closing = True
        log.warning("closing a slow consumer from %s", self.address)
        task = asyncio.get_running_loop().create_task(
            self.websocket.close(
                protocol.CLOSE_SLOW_CONSUMER,
                "Too far behind; reconnect and catch up with join_room after.",
            )
        )
        _closing_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_closing_tasks.discard)


def fanout(peers: Iterable[Peer], data: bytes) -> None:
    """Write one encoded frame to many connections without awaiting any of them."""
    ready = []
    for peer in peers:
        if peer._closing:
            continue
        if peer.overloaded():
            peer.close_slow()
        else:
            ready.append(peer.websocket)
    broadcast(ready, data, text=True)

"""One WebSocket connection as the chat logic sees it, and fan-out to many.

Every frame for a connection is queued synchronously in its ``websockets``
protocol (``send_frame``), so replies and events leave in exactly the order
the logic produced them, and nothing is awaited per recipient. The queued
frames are written at the end of the event-loop tick with *one* write per
connection (``Outbox``): a group commit announces many messages at once, and
a write per frame per recipient (a system call each) was the largest single
cost of a busy server. Anything ``websockets`` writes itself (a pong, a close
frame) flushes the same queue first, so the order on the wire stays the
order of the calls. A connection that stops reading is closed once its
outgoing buffer passes the limit (checked by a sweep), instead of growing the
server's memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.extensions import Extension
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

import protocol
from clubroom_server.metrics import HOT, SLOW_CONSUMERS_CLOSED
from clubroom_server.rooms import Room
from clubroom_server.store import UserRecord

log = logging.getLogger(__name__)
SWEEP_INTERVAL = 0.25  # seconds between checks for clients that stopped reading
_closing_tasks: set[asyncio.Task[None]] = set()


class Peer:
    """A connection, the user it is authenticated as, and the rooms it has joined."""

    __slots__ = (
        "_closing",
        "address",
        "outbox",
        "rooms",
        "send_limit",
        "token_hash",
        "user",
        "websocket",
    )

    def __init__(self, websocket: ServerConnection, address: str, send_limit: int) -> None:
        self.websocket = websocket
        # Looked up once: asyncio.get_running_loop() is a getpid() system call on Python 3.11.
        self.outbox = _outbox()
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
        """Queue one encoded frame for this connection (a reply: not counted as an event)."""
        _queue(self.websocket, EncodedText(data), self.outbox)

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


class EncodedText(Frame):
    """A text frame serialized once for every recipient.

    A server's frames are never masked and this server negotiates no
    extension (``compression=None``), so the bytes on the wire are the same
    for every connection: building them per recipient (``send_text``) was
    pure repetition. A connection with an extension still gets its own.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(Opcode.TEXT, data)
        self.wire = super().serialize(mask=False)

    def serialize(self, *, mask: bool, extensions: Sequence[Extension] | None = None) -> bytes:
        if mask or extensions:
            return super().serialize(mask=mask, extensions=extensions)
        return self.wire


class Outbox:
    """Connections with frames queued this tick; written once each, a tick later.

    One per event loop (tests run several loops in one process). When the
    first frame is queued, a ``call_soon`` schedules the flush's *scheduling*:
    so the flush runs after the callbacks already due, which include the
    requests a group commit has just woken. A sender's ``sent`` reply then
    leaves in the same write as the ``message`` event the commit announced to
    it, instead of a second system call (and TCP segment) per message.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: dict[ServerConnection, None] = {}

    def add(self, websocket: ServerConnection) -> None:
        if not self._pending:
            self._loop.call_soon(self._loop.call_soon, self.flush)
        self._pending[websocket] = None

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for websocket in pending:
            _write_queued(websocket)
        HOT.socket_writes += len(pending)


_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox] = (
    weakref.WeakKeyDictionary()
)


def _outbox() -> Outbox:
    loop = asyncio.get_running_loop()
    outbox = _outboxes.get(loop)
    if outbox is None:
        outbox = _outboxes[loop] = Outbox(loop)
    return outbox


def _queue(websocket: ServerConnection, frame: EncodedText, outbox: Outbox) -> bool:
    """Queue a frame in the connection's protocol; False if it is not open (skipped).

    The same checks as ``websockets.broadcast``: a closing connection and one
    in the middle of a fragmented message are skipped.
    """
    protocol = websocket.protocol
    if (
        protocol.state is not OPEN
        or protocol.expect_continuation_frame
        or websocket.send_in_progress is not None
    ):
        return False
    protocol.send_frame(frame)
    outbox.add(websocket)
    return True


def _write_queued(websocket: ServerConnection) -> None:
    """Write what the protocol holds for this connection in one ``transport.write``.

    Whatever ``websockets`` sent meanwhile (a pong, a close) already wrote the
    queue out in order; then nothing is left. An end-of-stream marker, which
    only ``websockets`` itself queues, is left to its own writer.
    """
    chunks = websocket.protocol.data_to_send()
    if not chunks:
        return
    if not all(chunks):
        websocket.protocol.writes[:0] = chunks
        websocket.send_data()
        return
    try:
        websocket.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    except Exception as exc:  # a transport closing under us: the client is gone anyway
        log.debug("could not write to a closing connection: %s", exc)


def fanout(peers: Iterable[Peer], data: bytes) -> None:
    """Queue one encoded frame for many connections without awaiting any of them.

    The frame is serialized once; connections that are closing are skipped;
    slow readers are caught by ``PeerSet.sweep``. Deliveries are counted once
    per fan-out, with the number of recipients.
    """
    frame = EncodedText(data)
    delivered = 0
    for peer in peers:
        delivered += _queue(peer.websocket, frame, peer.outbox)
    HOT.events_delivered += delivered


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

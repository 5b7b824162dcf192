"""One connection's life: read frames, decode, dispatch, reply in order, clean up.

Requests of one connection are handled one after another, which is what
keeps replies in request order. This is the one place where exceptions
become ``error`` frames; nothing else formats them, and no traceback ever
reaches a client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

import protocol
from clubroom_server import logs, metrics
from clubroom_server.collector import ClosedConnections
from clubroom_server.config import Settings
from clubroom_server.peer import Peer, PeerSet
from clubroom_server.service import ChatService
from protocol import ErrorCode, ProtocolError, RequestDecodeError

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 60.0  # seconds a client may read nothing while over its backlog
INTERNAL = "Something went wrong on the server; your request was not completed. Please retry."
RESTARTING = "The server is restarting; reconnect in a moment."
_connection_ids = itertools.count(1)


class SessionHandler:
    """The ``websockets`` connection handler: one call per connection."""

    def __init__(self, settings: Settings, service: ChatService, peers: PeerSet) -> None:
        self._settings = settings
        self._service = service
        self._peers = peers
        self._busy: set[Peer] = set()
        self._draining = False
        self.closed = ClosedConnections()

    async def __call__(self, websocket: ServerConnection) -> None:
        peer = Peer(websocket, _address(websocket), self._settings.send_buffer_limit)
        logs.bind_connection(f"c{next(_connection_ids)}")
        log.debug("connection opened from %s", peer.address)
        self._peers.add(peer)
        try:
            await self._serve(peer)
        except ConnectionClosed:
            pass
        finally:
            self._peers.discard(peer)
            self._service.disconnect(peer)
            log.debug("connection closed (code %s)", websocket.close_code)
            self.closed.closed(len(self._peers))  # its memory goes at a full collection

    async def _serve(self, peer: Peer) -> None:
        while True:
            if not await self._backlog_drained(peer):
                return
            data = await self._next_frame(peer)
            if data is None:
                return
            self._busy.add(peer)
            try:
                await self._process(peer, data)
            finally:
                self._busy.discard(peer)
            logs.bind_user(peer.user.username if peer.user else None)
            if self._draining:
                await _close_for_restart(peer)
                return

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (a drain waits for their replies)."""
        return len(self._busy)

    def drain(self) -> list[asyncio.Task[None]]:
        """Ask every client to come back later (1012), each once its request in flight is answered.

        Idle connections are closed now; a connection in the middle of a
        request closes itself right after sending the reply, so nothing it
        was promised is cut off. Returns the closing tasks started here.
        """
        self._draining = True
        idle = [peer for peer in self._peers if peer not in self._busy]
        return [asyncio.create_task(_close_for_restart(peer)) for peer in idle]

    def cut_off(self) -> int:
        """Drop every remaining connection at once (the drain timed out); return how many."""
        peers = list(self._peers)
        for peer in peers:
            transport = peer.websocket.transport
            if transport is not None:
                transport.abort()
        return len(peers)

    def reconfigure(self, settings: Settings) -> None:
        """New limits (SIGHUP): the idle timeout applies at once, the buffer limit to new peers."""
        self._settings = settings

    async def _backlog_drained(self, peer: Peer) -> bool:
        """Backpressure: read no request while this client's unsent output is over the limit.

        A client that asks and never reads would otherwise make the server
        hold every reply; now it holds at most the limit plus one reply.
        Reading resumes once the output has drained; a client that reads
        nothing for the drain timeout is closed as a slow consumer.
        """
        transport = peer.websocket.transport
        if transport is None or transport.get_write_buffer_size() <= self._settings.backlog_limit:
            return True
        try:
            async with asyncio.timeout(_drain_timeout(self._settings)):
                await peer.websocket.drain()
        except TimeoutError:
            peer.close_slow()
            return False
        return True

    async def _next_frame(self, peer: Peer) -> str | bytes | None:
        """The next frame; a connection that never logs in is closed after the idle timeout."""
        if peer.user is not None or self._settings.idle_timeout <= 0:
            return await peer.websocket.recv()
        try:
            async with asyncio.timeout(self._settings.idle_timeout):
                return await peer.websocket.recv()
        except TimeoutError:
            await peer.websocket.close(protocol.CLOSE_IDLE, "Idle without logging in.")
            return None

    async def _process(self, peer: Peer, data: str | bytes) -> None:
        try:
            request = protocol.decode_request(data)
        except RequestDecodeError as exc:
            peer.send(_error_frame(exc.request_id, exc))
            return
        try:
            reply = await self._service.handle(peer, request)
        except ProtocolError as exc:
            peer.send(_error_frame(request.id, exc))
            return
        except Exception:
            log.exception("unexpected failure handling a %s request", _kind(request))
            failure = ProtocolError(ErrorCode.INTERNAL_ERROR, INTERNAL)
            peer.send(_error_frame(request.id, failure))
            return
        if reply is not None:
            peer.send(protocol.encode(reply))


def _drain_timeout(settings: Settings) -> float:
    """As long as a keep-alive ping may go unanswered: longer, and the client is gone."""
    return 2 * settings.ping_interval if settings.ping_interval > 0 else DRAIN_TIMEOUT


async def _close_for_restart(peer: Peer) -> None:
    await peer.websocket.close(CloseCode.SERVICE_RESTART, RESTARTING)


def _error_frame(request_id: protocol.RequestId | None, exc: ProtocolError) -> bytes:
    metrics.error_sent(exc.code)
    return protocol.encode(
        protocol.Error(
            id=request_id, code=exc.code, message=exc.message, retry_after=exc.retry_after
        )
    )


def _kind(request: protocol.Request) -> str:
    return str(request.__struct_config__.tag)


def _address(websocket: ServerConnection) -> str:
    """The client's address as admission resolved it (a trusted proxy's visitor, or the peer)."""
    address = getattr(websocket, "client_address", None)
    if address:
        return str(address)
    remote = websocket.remote_address
    return str(remote[0]) if remote else "unknown"

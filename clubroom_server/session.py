"""One connection's life: read frames, decode, dispatch, reply in order, clean up.

Requests of one connection are handled one after another, which is what
keeps replies in request order. This is the one place where exceptions
become ``error`` frames; nothing else formats them, and no traceback ever
reaches a client.
"""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

import protocol
from clubroom_server.config import Settings
from clubroom_server.peer import Peer, PeerSet
from clubroom_server.service import ChatService
from protocol import ErrorCode, ProtocolError, RequestDecodeError

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 60.0  # seconds a client may read nothing while over its backlog
INTERNAL = "Something went wrong on the server; your request was not completed. Please retry."


class SessionHandler:
    """The ``websockets`` connection handler: one call per connection."""

    def __init__(self, settings: Settings, service: ChatService, peers: PeerSet) -> None:
        self._settings = settings
        self._service = service
        self._peers = peers

    async def __call__(self, websocket: ServerConnection) -> None:
        peer = Peer(websocket, _address(websocket), self._settings.send_buffer_limit)
        self._peers.add(peer)
        try:
            await self._serve(peer)
        except ConnectionClosed:
            pass
        finally:
            self._peers.discard(peer)
            self._service.disconnect(peer)

    async def _serve(self, peer: Peer) -> None:
        while True:
            if not await self._backlog_drained(peer):
                return
            data = await self._next_frame(peer)
            if data is None:
                return
            await self._process(peer, data)

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


def _error_frame(request_id: protocol.RequestId | None, exc: ProtocolError) -> bytes:
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

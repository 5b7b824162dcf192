"""The network edge: ``websockets`` serve() wiring, ``/healthz``, TLS and connection caps."""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

import protocol
from clubroom_server.config import Settings
from clubroom_server.session import SessionHandler

log = logging.getLogger(__name__)
CLUBROOM_V1 = Subprotocol(protocol.SUBPROTOCOL)

# websockets logs every frame at DEBUG, passwords included: never let it.
# Its INFO lines (each connection opened and closed) are noise at our scale.
_ws_log = logging.getLogger("clubroom_server.websockets")
_ws_log.setLevel(logging.WARNING)


class ClubroomServer:
    """Accepts connections, answers health checks and hands each socket to the session."""

    def __init__(
        self,
        settings: Settings,
        handler: SessionHandler,
        health: Callable[[], list[str]] = list,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._health = health
        self._server: Server | None = None
        self._per_address: Counter[str] = Counter()

    async def start(self) -> None:
        s = self._settings
        self._server = await serve(
            self._handle,
            s.host,
            s.port,
            subprotocols=[CLUBROOM_V1],
            select_subprotocol=_select_subprotocol,
            compression=None,  # no per-connection deflate: memory, CPU and bombs
            max_size=s.max_frame,
            max_queue=16,
            process_request=self._process_request,
            open_timeout=s.handshake_timeout,
            ping_interval=s.ping_interval or None,
            ping_timeout=s.ping_interval or None,
            close_timeout=5,
            ssl=_ssl_context(s),
            logger=_ws_log,
            server_header=None,
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self._settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{self._settings.scheme}://{host}:{self.port}"

    async def close(self) -> None:
        """Stop accepting, close every client with 1001 and wait for their handlers."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    async def _handle(self, websocket: ServerConnection) -> None:
        address = _address(websocket)
        self._per_address[address] += 1
        try:
            await self._handler(websocket)
        finally:
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/healthz":
            return _health_response(self._health())
        limit = self._settings.max_connections_per_address
        if limit > 0 and self._per_address[_address(connection)] >= limit:
            log.warning("refusing a connection from %s: too many open", _address(connection))
            return _plain(HTTPStatus.TOO_MANY_REQUESTS, "Too many connections from your address.\n")
        return None


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Choose ``clubroom.v1`` when offered; also accept plain tools that offer none."""
    return CLUBROOM_V1 if CLUBROOM_V1 in offered else None


def _health_response(problems: list[str]) -> Response:
    """200 ``ok``, or 503 naming what is down (a balancer then sends clients elsewhere)."""
    if not problems:
        return _plain(HTTPStatus.OK, "ok")
    return _plain(HTTPStatus.SERVICE_UNAVAILABLE, "".join(f"{p}\n" for p in problems))


def _plain(status: HTTPStatus, body: str) -> Response:
    headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
    data = body.encode()
    headers["Content-Length"] = str(len(data))
    return Response(status.value, status.phrase, headers, data)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certfile, settings.keyfile)
    return context


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return str(remote[0]) if remote else "unknown"

"""The network edge: ``websockets`` serve() wiring, ``/healthz``, TLS and admission.

Admission decisions (addresses, proxies, origins, handshake counts) live in
``admission.py``; this module applies them at the right moments of a
connection's life: at TCP accept, when the HTTP request has been read, and
when the socket is gone.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

import protocol
from clubroom_server.admission import (
    UNKNOWN,
    AcceptErrorFilter,
    AddressResolver,
    HandshakeGate,
    OriginPolicy,
    RefusalLog,
    parse_networks,
    raise_file_limit,
)
from clubroom_server.config import Settings
from clubroom_server.logs import WEBSOCKETS_LOGGER
from clubroom_server.session import SessionHandler

log = logging.getLogger(__name__)
CLUBROOM_V1 = Subprotocol(protocol.SUBPROTOCOL)

# websockets logs every frame at DEBUG, passwords included: logs.configure
# holds this logger at WARNING (its INFO lines are noise at our scale too).
_ws_log = logging.getLogger(WEBSOCKETS_LOGGER)
logging.getLogger("asyncio").addFilter(AcceptErrorFilter())


class ClubroomConnection(ServerConnection):
    """A connection counted from TCP accept, that knows which client it belongs to.

    ``peer_address`` is the TCP peer; ``client_address`` is who the limits
    and log lines are about (a trusted proxy's visitor, or the peer).
    """

    # Slots, not instance attributes: CPython keeps up to 30 attributes of a
    # class's instances in a compact table shared by all of them, and
    # websockets already uses 27; four more would give every connection a
    # dict of its own (1.4 KiB more per idle connection, found with tracemalloc).
    __slots__ = ("client_address", "counted", "handshake_pending", "peer_address")
    edge: ClubroomServer  # set on the per-server subclass made in ``start``

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer_address: str = UNKNOWN
        self.client_address: str = UNKNOWN
        self.handshake_pending = False
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer_address = self.client_address = str(peer[0]) if peer else UNKNOWN
        self.edge.accepted(self)
        if not self.counted:
            transport.abort()  # the handler sees no request and ends quietly

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.counted:
            self.edge.lost(self)


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
        self._addresses = AddressResolver(parse_networks(settings.trusted_proxies))
        self._origins = OriginPolicy(settings.allowed_origins)
        self._gate = HandshakeGate(
            settings.max_handshakes_per_address,
            settings.max_handshakes,
            exempt=self._addresses.is_trusted,
        )
        self._refusals = RefusalLog()
        self._ssl: ssl.SSLContext | None = None

    async def start(self) -> None:
        s = self._settings
        self._ssl = _ssl_context(s)
        limit = raise_file_limit()
        log.debug("open-file limit: %d", limit)
        connection_class = type("Connection", (ClubroomConnection,), {"edge": self})
        self._server = await serve(
            self._handler,
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
            ssl=self._ssl,
            logger=_ws_log,
            server_header=None,
            create_connection=connection_class,
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

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, send every client 1012 once its reply is out, wait for the handlers.

        Clients that have not closed after ``drain_timeout`` seconds are cut
        off, so a stop never hangs on a peer that does not answer.
        """
        if self._server is None:
            return
        self._server.close(close_connections=False)  # stop accepting; 503 to half-open ones
        closing = self._handler.drain()
        try:
            async with asyncio.timeout(drain_timeout):
                await self._server.wait_closed()
        except TimeoutError:
            left = self._handler.cut_off()
            log.warning("drain timeout: cutting off %d connection(s)", left)
            await self._server.wait_closed()
        await asyncio.gather(*closing, return_exceptions=True)

    def reconfigure(self, settings: Settings) -> None:
        """Take new limits and a renewed certificate (SIGHUP) without dropping a connection.

        The listening socket keeps its one ``SSLContext``, and each new
        handshake reads the certificate from it; loading the new chain into
        that same context changes what new connections get, while open ones
        keep the session they have. The files are tried on a scratch context
        first, so a bad pair (wrong key, half-written file) changes nothing.
        """
        if self._ssl is not None and settings.certfile is not None:
            _ssl_context(settings)  # raises ssl.SSLError/OSError if the files are unusable
            self._ssl.load_cert_chain(settings.certfile, settings.keyfile)
            log.info("TLS certificate reloaded from %s", settings.certfile)
        self._settings = settings

    def open_connections(self, address: str) -> int:
        """Connections of one client address, from TCP accept until closed."""
        return self._gate.open[address]

    def accepted(self, connection: ClubroomConnection) -> None:
        """At TCP accept: count the connection, or leave it uncounted to be dropped."""
        address = connection.peer_address
        connection.counted = self._gate.admit(address)
        connection.handshake_pending = connection.counted
        if not connection.counted:
            self._refusals.refused(address, "too many unfinished handshakes")

    def lost(self, connection: ClubroomConnection) -> None:
        if connection.handshake_pending:
            connection.handshake_pending = False
            self._gate.handshake_read(connection.peer_address)
        self._gate.closed(connection.client_address)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert isinstance(connection, ClubroomConnection)
        self._request_read(connection, request.headers)
        address = connection.client_address
        if request.path.split("?", 1)[0] == "/healthz":
            return _health_response(self._health(), head=request.method == "HEAD")
        if not self._origins.allows(request.headers):
            self._refusals.refused(address, "a web page from another site (Origin)")
            return _plain(HTTPStatus.FORBIDDEN, "This page may not connect to this server.\n")
        limit = self._settings.max_connections_per_address
        if limit > 0 and self._gate.open[address] > limit:
            self._refusals.refused(address, "too many open connections")
            return _plain(HTTPStatus.TOO_MANY_REQUESTS, "Too many connections from your address.\n")
        return None

    def _request_read(self, connection: ClubroomConnection, headers: Headers) -> None:
        """The handshake is no longer pending; a trusted proxy may now name the client."""
        if connection.handshake_pending:
            connection.handshake_pending = False
            self._gate.handshake_read(connection.peer_address)
        client = self._addresses.resolve(connection.peer_address, headers)
        self._gate.move(connection.client_address, client)
        connection.client_address = client


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Choose ``clubroom.v1`` when offered; also accept plain tools that offer none."""
    return CLUBROOM_V1 if CLUBROOM_V1 in offered else None


def _health_response(problems: list[str], *, head: bool) -> Response:
    """200 ``ok``, or 503 naming what is down (a balancer then sends clients elsewhere)."""
    if not problems:
        return _plain(HTTPStatus.OK, "ok", head=head)
    body = "".join(f"{problem}\n" for problem in problems)
    return _plain(HTTPStatus.SERVICE_UNAVAILABLE, body, head=head)


def _plain(status: HTTPStatus, body: str, *, head: bool = False) -> Response:
    """A short plain-text response; for HEAD, the headers only (HTTP forbids a body)."""
    headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
    data = body.encode()
    headers["Content-Length"] = str(len(data))
    return Response(status.value, status.phrase, headers, b"" if head else data)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certfile, settings.keyfile)
    return context

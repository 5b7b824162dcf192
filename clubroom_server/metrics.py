"""Prometheus metrics: what is counted, and the endpoint that serves them.

Counting stays off the hot path. What already exists as state (open
connections, users online, rooms) is read only when Prometheus scrapes
(``ServerCollector``); messages and deliveries are plain integers bumped once
per message and once per fan-out (with the number of recipients, never once
per recipient) and exported at scrape time (``HotCollector``); the library's
own instruments are used where events are rare (errors, slow consumers,
logins) or once per message (the latency histogram).

What the node depends on (``BackendCollector``): the database is asked at
each scrape (``clubroom_database_up``), the pool, the bus and the cluster
lease are read from the state they keep anyway (the bus's counters are plain
ints too).

The instruments are process-wide, as ``prometheus_client`` intends (one
server runs per process); each server's registry adds them to its own
scrape-time view. No label ever holds a room or user name: label values
come from small fixed sets (error codes, a handful of reasons).

The endpoint is a second ``websockets`` listener answering plain HTTP
``GET /metrics`` (and ``/healthz``) on its own address, 127.0.0.1 by
default, so metrics never share the public chat port.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from clubroom_server.logs import WEBSOCKETS_LOGGER
from protocol import ErrorCode

if TYPE_CHECKING:
    from clubroom_server.bus import RedisBus
    from clubroom_server.ordering import OrderStats
    from clubroom_server.peer import PeerSet
    from clubroom_server.presence import ClusterMembers
    from clubroom_server.rooms import Rooms
    from clubroom_server.session import SessionHandler
    from clubroom_server.store.interface import Store

log = logging.getLogger(__name__)

OFF = "off"
DEFAULT_METRICS_PORT = 9464  # the port commonly used for a Prometheus exporter's own endpoint
PROBE_TIMEOUT = 2.0  # seconds the database may take to answer a scrape's probe


class HotCounts:
    """The counts bumped for every message and fan-out: plain ints, read at scrape time.

    A ``prometheus_client`` counter takes a lock on every ``inc`` (about a
    microsecond); an attribute ``+=`` on the event loop costs a few dozen
    nanoseconds, and only the loop writes these.
    """

    __slots__ = ("events_delivered", "messages_stored", "socket_writes")

    def __init__(self) -> None:
        self.messages_stored = 0
        self.events_delivered = 0
        self.socket_writes = 0


HOT = HotCounts()


class HotCollector(Collector):
    """Exports ``HOT`` as Prometheus counters."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "clubroom_messages_stored",
            "Messages committed to the database.",
            value=HOT.messages_stored,
        )
        yield CounterMetricFamily(
            "clubroom_events_delivered",
            "Room events (messages, members joining and leaving) written to connections, "
            "one per recipient.",
            value=HOT.events_delivered,
        )
        yield CounterMetricFamily(
            "clubroom_socket_writes",
            "Writes of queued events and replies to connections: one per connection per "
            "event-loop tick, however many frames it carries.",
            value=HOT.socket_writes,
        )


SEND_LATENCY = Histogram(
    "clubroom_send_stored_seconds",
    "Time from a send request to its message being durable (committed).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=None,
)
COMMIT_BATCH = Histogram(
    "clubroom_store_commit_batch_writes",
    "Writes committed together in one database transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=None,
)
ERRORS_SENT = Counter(
    "clubroom_errors_sent", "Error replies sent to clients, by error code.", ["code"], registry=None
)
SLOW_CONSUMERS_CLOSED = Counter(
    "clubroom_slow_consumers_closed",
    "Connections closed (4008) because they stopped reading what they were sent.",
    registry=None,
)
LOGIN_FAILURES = Counter(
    "clubroom_login_failures",
    "Failed logins (method=password) and resumes (method=token).",
    ["method"],
    registry=None,
)
LOGIN_THROTTLED = Counter(
    "clubroom_login_throttled",
    "Login and resume attempts refused because of too many recent failures.",
    registry=None,
)
COMMIT_FAILURES = Counter(
    "clubroom_store_commit_failures",
    "Database transactions that stored nothing: reason=unavailable when the database could "
    "not be reached or was locked, reason=error for any other failure. Writes refused by a "
    "rule (a taken name) are not failures.",
    ["reason"],
    registry=None,
)
ROOMS_DELETED = Counter(
    "clubroom_rooms_deleted",
    "Rooms deleted: reason=cleanup when the last member left or a stored room was not "
    "rejoined after a restart (counted by the node that deleted it), reason=admin by an "
    "administrator (counted by each node that had members in it).",
    ["reason"],
    registry=None,
)
GC_PAUSES = Histogram(
    "clubroom_gc_pause_seconds",
    "Garbage collections of the older generations (1, 2) and how long each stopped the server.",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=None,
)
PROCESS_WIDE: tuple[Collector, ...] = (
    HotCollector(),
    GC_PAUSES,
    SEND_LATENCY,
    COMMIT_BATCH,
    ERRORS_SENT,
    SLOW_CONSUMERS_CLOSED,
    LOGIN_FAILURES,
    LOGIN_THROTTLED,
    ROOMS_DELETED,
    COMMIT_FAILURES,
)

# Children made once (a labelled lookup takes a lock), and every series exists
# from the start at 0, so rates work from the first scrape.
_ERROR_COUNTERS = {code: ERRORS_SENT.labels(code.value) for code in ErrorCode}
_PASSWORD_FAILURES = LOGIN_FAILURES.labels("password")
_TOKEN_FAILURES = LOGIN_FAILURES.labels("token")
ROOMS_DELETED_BY_CLEANUP = ROOMS_DELETED.labels("cleanup")
ROOMS_DELETED_BY_ADMIN = ROOMS_DELETED.labels("admin")
COMMIT_FAILED_UNAVAILABLE = COMMIT_FAILURES.labels("unavailable")
COMMIT_FAILED_ERROR = COMMIT_FAILURES.labels("error")
_GC_PAUSES_BY_GENERATION = {generation: GC_PAUSES.labels(str(generation)) for generation in (1, 2)}


def gc_paused(generation: int, seconds: float) -> None:
    """Record one collection's pause: a full one (generation 2) stops every connection.

    The youngest generation is left out: it runs ten times as often as
    generation 1 and examines only the objects made since the last one, so
    its pauses are a small fraction of a millisecond and tell nothing.
    """
    child = _GC_PAUSES_BY_GENERATION.get(generation)
    if child is not None:
        child.observe(seconds)


def error_sent(code: ErrorCode) -> None:
    """Count an error reply, and the login failure or throttle it stands for."""
    counter = _ERROR_COUNTERS.get(code)
    (counter or ERRORS_SENT.labels(str(code))).inc()
    if code is ErrorCode.INVALID_CREDENTIALS:
        _PASSWORD_FAILURES.inc()
    elif code is ErrorCode.INVALID_TOKEN:
        _TOKEN_FAILURES.inc()
    elif code is ErrorCode.TOO_MANY_ATTEMPTS:
        LOGIN_THROTTLED.inc()


class ServerCollector(Collector):
    """Gauges read from the live server only when Prometheus scrapes."""

    def __init__(self, peers: PeerSet, rooms: Rooms, sessions: SessionHandler) -> None:
        self._peers = peers
        self._rooms = rooms
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        peers = list(self._peers)
        users = {peer.user.key for peer in peers if peer.user is not None}
        yield GaugeMetricFamily(
            "clubroom_connections_open", "Open WebSocket connections.", value=len(peers)
        )
        yield GaugeMetricFamily(
            "clubroom_users_online",
            "Distinct users logged in on at least one open connection.",
            value=len(users),
        )
        yield GaugeMetricFamily(
            "clubroom_rooms", "Rooms that exist (with members or in grace).", value=len(self._rooms)
        )
        yield GaugeMetricFamily(
            "clubroom_requests_in_flight",
            "Requests being handled (waiting for the database or a password hash).",
            value=self._sessions.in_flight,
        )


class BackendCollector(Collector):
    """The database and, on a cluster node, the bus and the lease: what the node depends on.

    ``clubroom_database_up`` must be true when scraped, not when last used: an
    idle node would otherwise report a database that died an hour ago as up.
    So each scrape first runs ``probe`` (one ``SELECT 1``, bounded by
    ``PROBE_TIMEOUT``), as PostgreSQL's own exporter does. Everything else is
    state the store, the bus and the lease keep anyway, read as it is.
    """

    def __init__(
        self,
        store: Store,
        bus: RedisBus | None = None,
        lease: ClusterMembers | None = None,
        order: OrderStats | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._lease = lease
        self._order = order
        self._database_up = True

    async def probe(self) -> None:
        """Ask the database now; a slow answer counts as none."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._store.ping()
        except Exception as exc:  # whatever the reason, the database did not answer
            log.debug("the metrics probe of the database failed: %r", exc)
            self._database_up = False
        else:
            self._database_up = True

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "clubroom_database_up",
            "1 when the database answered a query at this scrape, else 0.",
            value=int(self._database_up),
        )
        yield from self._pool()
        if self._lease is not None:
            yield GaugeMetricFamily(
                "clubroom_cluster_lease_held",
                "1 while this node's cluster lease is renewed in the database; at 0 the node "
                "has sent its clients away.",
                value=int(self._lease.healthy),
            )
        if self._bus is not None:
            yield from _bus_metrics(self._bus)
        if self._order is not None:
            yield from _order_metrics(self._order)

    def _pool(self) -> Iterator[Metric]:
        usage = self._store.pool_usage()
        if usage is None:
            return
        connections = GaugeMetricFamily(
            "clubroom_database_connections",
            "Database connections in the pool, by state (in_use by a query, or idle).",
            labels=["state"],
        )
        connections.add_metric(["in_use"], usage.in_use)
        connections.add_metric(["idle"], usage.idle)
        yield connections
        yield GaugeMetricFamily(
            "clubroom_database_connections_max",
            "The pool's size limit (--db-pool-size); in_use at this limit means requests queue.",
            value=usage.max,
        )


def _bus_metrics(bus: RedisBus) -> Iterator[Metric]:
    stats = bus.stats
    yield GaugeMetricFamily(
        "clubroom_bus_connected",
        "1 while the bus (Redis) works for this node: subscribed, and publishing succeeds.",
        value=int(bus.healthy),
    )
    yield GaugeMetricFamily(
        "clubroom_bus_unpublished_events",
        "Events stored but not yet handed to Redis (the publishing backlog, kept while Redis "
        "is away).",
        value=bus.unpublished,
    )
    yield CounterMetricFamily(
        "clubroom_bus_events_published", "Events handed to Redis.", value=stats.published
    )
    yield CounterMetricFamily(
        "clubroom_bus_publish_failures",
        "Attempts to publish that Redis did not take (each is retried).",
        value=stats.publish_failures,
    )
    yield CounterMetricFamily(
        "clubroom_bus_events_dropped",
        "Unpublished events let go because Redis stayed away too long (other nodes then read "
        "those messages from the database).",
        value=stats.dropped,
    )
    yield CounterMetricFamily(
        "clubroom_bus_reconnects",
        "Times this node connected to Redis again after losing it.",
        value=stats.reconnects,
    )


def _order_metrics(stats: OrderStats) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "clubroom_cluster_messages_held_back",
        "Messages that reached this node before their predecessor in the room and waited "
        "for it (normal when nodes commit to one room a moment apart).",
        value=stats.held_back,
    )
    yield CounterMetricFamily(
        "clubroom_cluster_gaps_late",
        "Gaps in a room's sequence still open after the short wait (each delayed the "
        "messages behind it); closed by the bus catching up, else read from the database.",
        value=stats.late,
    )
    yield CounterMetricFamily(
        "clubroom_cluster_gaps_closed_by_bus",
        "Late gaps the bus closed once asked to catch up (no database read needed).",
        value=stats.closed_by_bus,
    )
    yield CounterMetricFamily(
        "clubroom_cluster_gap_reads",
        "Reads of missing messages from the database (late gaps, and every room after the "
        "bus reconnected).",
        value=stats.database_reads,
    )


def registry_for(collectors: Iterable[Collector]) -> CollectorRegistry:
    """One server's registry: its own gauges, the process-wide counters, process stats."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (*PROCESS_WIDE, *collectors):
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def parse_address(value: str) -> tuple[str, int] | None:
    """``off`` → None; ``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` → (host, port).

    A bare port binds 127.0.0.1: metrics are for the operator, not the public.
    """
    value = value.strip()
    if value.lower() in (OFF, ""):
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT, PORT or off")
    return host, int(port)


class MetricsEndpoint:
    """``GET /metrics`` in Prometheus (or OpenMetrics) text, on an address of its own."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._registry = registry
        self._before_scrape = before_scrape
        self._host = host
        self._port = port
        self._server: Server | None = None

    async def start(self) -> None:
        """Listen; a taken or invalid address is an ``OSError`` that names the metrics address."""
        try:
            self._server = await serve(
                _never_called,
                self._host,
                self._port,
                process_request=self._answer,
                logger=logging.getLogger(WEBSOCKETS_LOGGER),
                server_header=None,
                compression=None,
                # A scraper that keeps its socket after the answer must not hold
                # up shutdown for websockets' default 10 s.
                close_timeout=1,
            )
        except OSError as exc:
            where = f"{self._host}:{self._port}"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(exc.errno, f"--metrics-address {where}: {reason}") from None
        log.info("metrics at http://%s/metrics", self.address)

    @property
    def port(self) -> int:
        assert self._server is not None, "the metrics endpoint is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, connection: ServerConnection, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
        if path != "/metrics":
            return _response(HTTPStatus.NOT_FOUND, b"Not found; try /metrics\n", "text/plain")
        if self._before_scrape is not None:
            await self._before_scrape()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return _response(HTTPStatus.OK, encoder(self._registry), content_type)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


async def _never_called(connection: ServerConnection) -> None:
    """Every request is answered over HTTP above; no WebSocket is ever opened here."""
    await connection.close()

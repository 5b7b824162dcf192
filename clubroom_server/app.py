"""The composition root: builds the real objects, starts them, and stops them in order."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from prometheus_client import CollectorRegistry

from clubroom_server import logs, metrics
from clubroom_server.auth import PasswordHasher
from clubroom_server.bus import RedisBus
from clubroom_server.cluster import ClusterNode
from clubroom_server.config import RESTART_ONLY, Settings
from clubroom_server.conversation import Conversation
from clubroom_server.limits import SharedLimits
from clubroom_server.manage.live import AdminFollower
from clubroom_server.manage.requests import AdminRequests
from clubroom_server.metrics import BackendCollector, MetricsEndpoint, ServerCollector
from clubroom_server.peer import PeerSet
from clubroom_server.presence import ClusterMembers
from clubroom_server.server import ClubroomServer
from clubroom_server.service import ChatService
from clubroom_server.session import SessionHandler
from clubroom_server.store import Store, describe_url, make_store
from clubroom_server.store.admin import open_admin_store
from clubroom_server.store.conversation import open_conversation_store
from clubroom_server.store.presence import ClusterPresence

log = logging.getLogger(__name__)
CLOSE_SERVICE_RESTART = 1012  # RFC 6455 "service restart": reconnect, maybe elsewhere


class Clubroom:
    """A running Clubroom server and everything it owns."""

    def __init__(self, settings: Settings) -> None:
        logs.protect_secrets()
        self.settings = settings
        self.store: Store = make_store(
            settings.db,
            synchronous=settings.synchronous,
            pool_size=settings.db_pool_size,
            commit_interval=settings.commit_interval,
            search_timeout=settings.search_timeout,
        )
        self.hasher = PasswordHasher(
            settings.argon2_parameters, settings.hash_workers, settings.hash_queue_limit
        )
        self.peers = PeerSet()
        self.bus: RedisBus | None = None
        self.service = ChatService(
            settings, self.store, self.hasher, self.peers, cluster=self._cluster_node()
        )
        self.sessions = SessionHandler(settings, self.service, self.peers)
        self.server = ClubroomServer(settings, self.sessions, health=self.problems)
        self.registry, self.metrics = self._metrics()
        self.follower: AdminFollower | None = None
        self.conversation: Conversation | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def start(cls, settings: Settings) -> Clubroom:
        app = cls(settings)
        try:
            await app.store.open()
            await app.service.start()
            admin_store = await open_admin_store(settings.db)
            app.follower = AdminFollower(admin_store, app.peers, app.service.rooms)
            await app.follower.start()
            cluster = app.service.cluster
            admin = AdminRequests(
                admin_store,
                app.follower,
                app.service.rooms,
                count_members=cluster.members.member_count if cluster else None,
            )
            app.service.add_handlers(admin.handlers)
            app.service.is_admin = admin.is_admin
            conversation = Conversation(await open_conversation_store(settings.db), app.service)
            app.conversation = conversation
            await conversation.start()
            app.service.conversation = conversation
            app.service.add_handlers(conversation.handlers)
            await app.server.start()
            if app.metrics is not None:
                await app.metrics.start()
            app._sweeper = asyncio.create_task(app.peers.sweep_forever(), name="slow-sweeper")
        except BaseException:
            await app.server.close(0)
            if app.follower is not None:
                await app.follower.close()
            if app.conversation is not None:
                await app.conversation.close()
            await app.service.close_cluster()
            await app.store.close()
            app.hasher.close()
            raise
        log.info("Clubroom listening on %s (database %s)", app.url, describe_url(settings.db))
        return app

    def _metrics(self) -> tuple[CollectorRegistry, MetricsEndpoint | None]:
        """This server's registry, and its endpoint unless metrics are off."""
        cluster = self.service.cluster
        backend = BackendCollector(
            self.store,
            self.bus,
            cluster.members if cluster else None,
            cluster.order.stats if cluster else None,
        )
        chat = ServerCollector(self.peers, self.service.rooms, self.sessions)
        registry = metrics.registry_for([chat, backend])
        address = metrics.parse_address(self.settings.metrics_address)
        if address is None:
            return registry, None
        return registry, MetricsEndpoint(registry, *address, before_scrape=backend.probe)

    def _cluster_node(self) -> ClusterNode | None:
        """With ``--bus``: the parts that make this process one node of a cluster."""
        s = self.settings
        if s.bus is None:
            return None
        members = ClusterMembers(
            ClusterPresence(s.db, s.node_id),
            grace=s.grace,
            lease=s.node_lease,
            on_left=lambda *left: self._members_left(*left),
            on_fenced=self._fenced,
        )
        bus = self.bus = RedisBus(s.bus, s.node_id, s.bus_prefix)
        # The shared limits take their rate and burst from this node's local
        # buckets, so a SIGHUP that changes those changes the cluster's too.
        limits = SharedLimits(s.bus, s.bus_prefix)
        return ClusterNode(bus, self.store, members, s.node_id, limits=limits)

    def _members_left(
        self, room_id: int, room_name: str, usernames: list[str], version: int
    ) -> None:
        assert self.service.cluster is not None
        self.service.cluster.members_left(room_id, room_name, usernames, version)

    def _fenced(self) -> None:
        """The lease is lost: the others will drop our members, so send our clients elsewhere."""
        self.peers.close_all(CLOSE_SERVICE_RESTART, "This server lost the cluster; reconnect.")

    def problems(self) -> list[str]:
        """What keeps this node from serving fully right now (``/healthz`` answers 503)."""
        cluster = self.service.cluster
        return [] if cluster is None else cluster.problems()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def reload(self, settings: Settings) -> list[str]:
        """Apply what can change while running (SIGHUP); return the fields that need a restart.

        Log level, limits, timeouts and the TLS certificate files change at
        once; the fields in ``RESTART_ONLY`` keep their running values.
        """
        fixed = list(RESTART_ONLY)
        if (settings.certfile is None) != (self.settings.certfile is None):
            fixed += ["certfile", "keyfile"]  # turning TLS on or off changes the listener
        ignored = [f for f in fixed if getattr(settings, f) != getattr(self.settings, f)]
        settings = settings.replace(**{f: getattr(self.settings, f) for f in fixed})
        self.server.reconfigure(settings)  # first: a bad certificate changes nothing
        logs.set_level(settings.log_level)
        self.sessions.reconfigure(settings)
        self.service.reconfigure(settings)
        self.settings = settings
        if ignored:
            log.warning("these settings change only with a restart: %s", ", ".join(ignored))
        log.info("configuration reloaded")
        return ignored

    async def close(self) -> None:
        """Stop accepting, send clients 1012 after their replies, finish writes, close the store."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.server.close(self.settings.drain_timeout)
        if self.metrics is not None:
            await self.metrics.close()
        self.service.close()
        if self.follower is not None:
            await self.follower.close()
        await self.service.finish_deletions()
        if self.conversation is not None:
            await self.conversation.close()
        await self.service.close_cluster()
        await self.store.close()
        self.hasher.close()
        log.info("Clubroom stopped")

    async def __aenter__(self) -> Clubroom:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

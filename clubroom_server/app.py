"""The composition root: builds the real objects, starts them, and stops them in order."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from clubroom_server.auth import PasswordHasher
from clubroom_server.bus import RedisBus
from clubroom_server.cluster import ClusterNode
from clubroom_server.config import Settings
from clubroom_server.limits import SharedTokenBucket
from clubroom_server.peer import PeerSet
from clubroom_server.presence import ClusterMembers
from clubroom_server.server import ClubroomServer
from clubroom_server.service import ChatService
from clubroom_server.session import SessionHandler
from clubroom_server.store import Store, describe_url, make_store
from clubroom_server.store.presence import ClusterPresence

log = logging.getLogger(__name__)
CLOSE_SERVICE_RESTART = 1012  # RFC 6455 "service restart": reconnect, maybe elsewhere


class Clubroom:
    """A running Clubroom server and everything it owns."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = make_store(
            settings.db, synchronous=settings.synchronous, pool_size=settings.db_pool_size
        )
        self.hasher = PasswordHasher(
            settings.argon2_parameters, settings.hash_workers, settings.hash_queue_limit
        )
        self.peers = PeerSet()
        self.service = ChatService(
            settings, self.store, self.hasher, self.peers, cluster=self._cluster_node()
        )
        self.server = ClubroomServer(
            settings, SessionHandler(settings, self.service, self.peers), health=self.problems
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def start(cls, settings: Settings) -> Clubroom:
        app = cls(settings)
        try:
            await app.store.open()
            await app.service.start()
            await app.server.start()
            app._sweeper = asyncio.create_task(app.peers.sweep_forever(), name="slow-sweeper")
        except BaseException:
            await app.service.close_cluster()
            await app.store.close()
            app.hasher.close()
            raise
        log.info("Clubroom listening on %s (database %s)", app.url, describe_url(settings.db))
        return app

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
        bus = RedisBus(s.bus, s.node_id, s.bus_prefix)
        sends = SharedTokenBucket(s.bus, s.bus_prefix, "send", s.rate_limit, s.rate_burst)
        return ClusterNode(bus, self.store, members, s.node_id, send_limit=sends)

    def _members_left(self, room_id: int, room_name: str, usernames: list[str]) -> None:
        assert self.service.cluster is not None
        self.service.cluster.members_left(room_id, room_name, usernames)

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

    async def close(self) -> None:
        """Stop accepting, close clients with 1001, finish writes, close the database."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.service.cluster is not None:
            # Drain: 1012 tells clients to reconnect now, to another node.
            self.peers.close_all(CLOSE_SERVICE_RESTART, "This server is restarting; reconnect.")
        await self.server.close()
        self.service.close()
        await self.service.finish_deletions()
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

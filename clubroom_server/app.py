"""The composition root: builds the real objects, starts them, and stops them in order."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from clubroom_server import logs, metrics
from clubroom_server.auth import PasswordHasher
from clubroom_server.config import RESTART_ONLY, Settings
from clubroom_server.conversation import Conversation
from clubroom_server.manage.live import AdminFollower
from clubroom_server.manage.requests import AdminRequests
from clubroom_server.metrics import MetricsEndpoint, ServerCollector
from clubroom_server.peer import PeerSet
from clubroom_server.server import ClubroomServer
from clubroom_server.service import ChatService
from clubroom_server.session import SessionHandler
from clubroom_server.store import Store, describe_url, make_store
from clubroom_server.store.admin import open_admin_store
from clubroom_server.store.conversation import open_conversation_store

log = logging.getLogger(__name__)


class Clubroom:
    """A running Clubroom server and everything it owns."""

    def __init__(self, settings: Settings) -> None:
        logs.protect_secrets()
        self.settings = settings
        self.store: Store = make_store(
            settings.db, synchronous=settings.synchronous, pool_size=settings.db_pool_size
        )
        self.hasher = PasswordHasher(
            settings.argon2_parameters, settings.hash_workers, settings.hash_queue_limit
        )
        self.peers = PeerSet()
        self.service = ChatService(settings, self.store, self.hasher, self.peers)
        self.sessions = SessionHandler(settings, self.service, self.peers)
        self.server = ClubroomServer(settings, self.sessions)
        collector = ServerCollector(self.peers, self.service.rooms, self.sessions)
        self.registry = metrics.registry_for([collector])
        metrics_address = metrics.parse_address(settings.metrics_address)
        self.metrics = MetricsEndpoint(self.registry, *metrics_address) if metrics_address else None
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
            admin = AdminRequests(admin_store, app.follower, app.service.rooms)
            app.service.add_handlers(admin.handlers)
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
            await app.store.close()
            app.hasher.close()
            raise
        log.info("Clubroom listening on %s (database %s)", app.url, describe_url(settings.db))
        return app

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

"""Clusters for tests: N Clubroom nodes on one PostgreSQL database and one Redis.

Two shapes:

* ``InProcessCluster`` — N ``Clubroom`` apps in the test's event loop. It
  looks like ``tests.conftest.RunningServer`` (``url``, ``rows``, ``stop``,
  ``start``…) except that every read of ``url`` gives the next node, round
  robin: the end-to-end contract tests, unchanged, spread their clients over
  the nodes.
* ``ProcessCluster`` — N ``clubroom-server serve`` processes, for what only
  a process can show: kill -9, SIGTERM draining, a node restarted with the
  same id.

Every cluster gets its own Redis channel prefix, so tests sharing the
machine's Redis never hear each other.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from clubroom_server.app import Clubroom
from clubroom_server.config import Settings
from tests.databases import TEST_POOL_SIZE, query
from tests.server.serverprocess import ServerProcess

NODES = 3
CLUSTER_DEFAULTS: dict[str, Any] = {"node_lease": 3.0}


_issued_prefixes: list[str] = []  # this test's, until forget_prefixes


def bus_prefix() -> str:
    """A channel and key prefix no other test uses (its keys go at the test's end)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    _issued_prefixes.append(prefix)
    return prefix


def forget_prefixes(redis_url: str) -> int:
    """Delete the keys under every prefix handed out since the last call; how many.

    The servers leave rate-limit buckets and attempt counters behind (with
    TTLs of up to an hour); a test leaves the shared Redis as it found it.
    """
    prefixes, _issued_prefixes[:] = list(_issued_prefixes), []
    if not prefixes:
        return 0
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key for prefix in prefixes for key in client.scan_iter(match=f"{prefix}:*")]
        return client.unlink(*keys) if keys else 0
    finally:
        client.close()


class InProcessCluster:
    """N nodes in this process; ``url`` hands out the nodes in turn."""

    def __init__(self, settings: Settings, nodes: int = NODES) -> None:
        self.settings = settings
        self.node_settings = [settings.replace(node_id=f"node{i}", port=0) for i in range(nodes)]
        self.apps: list[Clubroom | None] = [None] * nodes
        self._turn = itertools.cycle(range(nodes))

    @property
    def url(self) -> str:
        """The next node's URL (round robin over the nodes)."""
        return self.node_url(next(self._turn))

    def node_url(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.node_settings[index].port}"

    @property
    def port(self) -> int:
        return self.node_settings[0].port

    @property
    def db(self) -> str:
        return self.settings.db

    @property
    def app(self) -> Clubroom | None:
        return self.apps[0]

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await query(self.settings.db, sql, params)

    async def start(self) -> None:
        """Start every node (again, on the same ports)."""
        for index in range(len(self.apps)):
            await self.start_node(index)

    async def start_node(self, index: int) -> None:
        assert self.apps[index] is None, "already running"
        app = await Clubroom.start(self.node_settings[index])
        self.apps[index] = app
        self.node_settings[index] = self.node_settings[index].replace(port=app.port)

    async def stop(self) -> None:
        """Stop every node in order, as SIGTERM would."""
        for index in range(len(self.apps)):
            await self.stop_node(index)

    async def stop_node(self, index: int) -> None:
        app, self.apps[index] = self.apps[index], None
        if app is not None:
            await app.close()


class ProcessCluster:
    """N ``clubroom-server serve`` processes on one database and bus."""

    def __init__(self, db: str, bus: str, args: Sequence[str] = (), nodes: int = NODES) -> None:
        self.db = db
        self.bus = bus
        self.prefix = bus_prefix()
        self.args = list(args)
        self.nodes: list[ServerProcess | None] = [None] * nodes
        self.ports = [0] * nodes

    def node_args(self, index: int) -> list[str]:
        return [
            "--port",
            str(self.ports[index]),
            "--db",
            self.db,
            "--bus",
            self.bus,
            "--bus-prefix",
            self.prefix,
            "--node-id",
            f"node{index}",
            "--argon2-profile",
            "cheapest",
            "--synchronous",
            "NORMAL",
            "--db-pool-size",
            str(TEST_POOL_SIZE),
            *self.args,
        ]

    def url(self, index: int) -> str:
        node = self.nodes[index]
        assert node is not None, f"node {index} is not running"
        return node.url

    async def start(self) -> None:
        """Start every node at once, as a service manager would; if one fails, stop the rest.

        At once rather than one after another: each start is mostly waiting
        (a Python process importing, connecting, taking its lease).
        """
        starts = (self.start_node(index) for index in range(len(self.nodes)))
        failures = [
            result
            for result in await asyncio.gather(*starts, return_exceptions=True)
            if isinstance(result, BaseException)
        ]
        if failures:
            await self.stop()
            raise failures[0]

    async def start_node(self, index: int) -> ServerProcess:
        """Start (or restart, on the same port and id) one node."""
        assert self.nodes[index] is None, "already running"
        node = await ServerProcess.start(*self.node_args(index))
        self.nodes[index], self.ports[index] = node, node.port
        return node

    async def kill(self, index: int) -> None:
        """kill -9: no drain, no goodbye; its lease simply runs out."""
        node, self.nodes[index] = self.nodes[index], None
        assert node is not None
        await node.kill()

    def freeze(self, index: int) -> None:
        """SIGSTOP: the node stays connected but does nothing (a stall, a VM pause)."""
        node = self.nodes[index]
        assert node is not None
        node.process.send_signal(signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        node = self.nodes[index]
        assert node is not None
        node.process.send_signal(signal.SIGCONT)

    async def terminate(self, index: int) -> int:
        node, self.nodes[index] = self.nodes[index], None
        assert node is not None
        return await node.terminate()

    async def stop(self) -> None:
        for index, node in enumerate(self.nodes):
            if node is not None:
                self.thaw(index)  # a frozen node would never hear SIGTERM
                self.nodes[index] = None
                await node.terminate()

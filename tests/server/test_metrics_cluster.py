"""What a node depends on, in Prometheus: the bus (Redis) and the database (PostgreSQL).

Real cluster nodes (``tests/cluster/harness.py``) on a Redis and a PostgreSQL
of the test's own, which it stops and starts again; ``/metrics`` is scraped
over HTTP and read with prometheus-client's parser, as Prometheus would.
"""

from __future__ import annotations

import asyncio

import pytest

from clubroom_server.config import Settings
from tests.cluster.harness import CLUSTER_DEFAULTS, InProcessCluster, bus_prefix
from tests.conftest import TEST_DEFAULTS
from tests.databases import fresh_postgres
from tests.pginstance import OwnPostgres, private_postgres
from tests.redisserver import RedisServer
from tests.server.scrape import Samples, names, scrape_app, value
from tests.services import redis_url
from tests.waiting import wait_until
from tests.wsclient import WireClient, in_room, user

__all__ = ["private_postgres"]  # the fixture

# Metrics describe one node; these tests build their own clusters.
pytestmark = pytest.mark.single_process

RECOVERY = 30.0  # seconds a restarted service may take to be seen again (backoff, load)


def cluster_settings(db: str, bus: str, **overrides: object) -> Settings:
    return Settings(
        **{
            **TEST_DEFAULTS,
            **CLUSTER_DEFAULTS,
            "db": db,
            "bus": bus,
            "bus_prefix": bus_prefix(),
            "metrics_address": "127.0.0.1:0",
            "rate_limit": 0,
            "room_rate_limit": 0,
            **overrides,
        }
    )


async def on_nodes(cluster: InProcessCluster, clients: list[WireClient]) -> list[WireClient]:
    """Ann on node 0 and Bob on node 1, both in the Lobby."""
    pair = [await user(cluster.node_url(0), "ann"), await user(cluster.node_url(1), "bob")]
    clients += pair
    return pair


async def scrape_node(cluster: InProcessCluster, index: int) -> Samples:
    return await scrape_app(cluster.apps[index])


async def until_scraped(
    cluster: InProcessCluster, index: int, name: str, wanted: float, **labels: str
) -> Samples:
    """Scrape until ``name`` has the wanted value; the last scrape."""
    last: list[Samples] = []

    async def reached() -> bool:
        last.append(await scrape_node(cluster, index))
        return value(last[-1], name, **labels) == wanted

    await wait_until(reached, within=RECOVERY)
    return last[-1]


async def test_a_cluster_node_reports_its_bus_and_database(
    clients: list[WireClient],
) -> None:
    """Connected bus, database up, lease held, the pool's use and limit, events published."""
    async with fresh_postgres() as db:
        cluster = InProcessCluster(cluster_settings(db, redis_url(), db_pool_size=4), nodes=2)
        await cluster.start()
        try:
            before = await scrape_node(cluster, 0)
            ann, bob = await on_nodes(cluster, clients)
            await in_room([ann, bob])
            await ann.ok("send", room="Lobby", text="hello")
            assert (await bob.event("message"))["message"]["text"] == "hello"
            after = await scrape_node(cluster, 0)
        finally:
            await cluster.stop()
    for gauge in ("clubroom_bus_connected", "clubroom_database_up", "clubroom_cluster_lease_held"):
        assert value(after, gauge) == 1, gauge
    assert value(after, "clubroom_database_connections_max") == 4
    in_use = value(after, "clubroom_database_connections", state="in_use")
    idle = value(after, "clubroom_database_connections", state="idle")
    assert 0 <= in_use <= 4 and in_use + idle >= 1
    published = value(after, "clubroom_bus_events_published_total") - value(
        before, "clubroom_bus_events_published_total"
    )
    assert published >= 1, "the message (and the join) went out on the bus"
    assert value(after, "clubroom_bus_unpublished_events") == 0
    assert value(after, "clubroom_bus_reconnects_total") == 0
    for counter in ("messages_held_back", "gaps_late", "gaps_closed_by_bus", "gap_reads"):
        assert f"clubroom_cluster_{counter}_total" in names(after), counter
    for family in names(after):
        if family.startswith(("clubroom_bus_", "clubroom_database_")):
            labels = [pairs for name, pairs in after if name == family]
            assert all(key == "state" for pairs in labels for key, _ in pairs), family


async def test_bus_gauges_fall_to_zero_while_redis_is_away_and_recover(
    private_redis: RedisServer, clients: list[WireClient]
) -> None:
    """Redis stops: connected 0, a message sent meanwhile waits unpublished and its failed
    publish is counted; Redis is back: connected 1, one reconnect, the backlog drains and
    the other node's member gets the message."""
    async with fresh_postgres() as db:
        cluster = InProcessCluster(cluster_settings(db, private_redis.url), nodes=2)
        await cluster.start()
        try:
            ann, bob = await on_nodes(cluster, clients)
            await in_room([ann, bob])
            before = await scrape_node(cluster, 0)
            assert value(before, "clubroom_bus_connected") == 1
            await private_redis.stop()
            down = await until_scraped(cluster, 0, "clubroom_bus_connected", 0)
            assert value(down, "clubroom_database_up") == 1, "only the bus is away"
            await ann.ok("send", room="Lobby", text="while Redis was away")
            stuck = await scrape_node(cluster, 0)
            failed = value(stuck, "clubroom_bus_publish_failures_total") - value(
                before, "clubroom_bus_publish_failures_total"
            )
            assert failed >= 1 or value(stuck, "clubroom_bus_unpublished_events") >= 1
            await private_redis.start()
            back = await until_scraped(cluster, 0, "clubroom_bus_connected", 1)
            assert value(back, "clubroom_bus_reconnects_total") == 1
            await until_scraped(cluster, 0, "clubroom_bus_unpublished_events", 0)
            assert (await bob.event("message"))["message"]["text"] == "while Redis was away"
            after = await scrape_node(cluster, 0)
            assert (
                value(after, "clubroom_bus_publish_failures_total")
                >= value(before, "clubroom_bus_publish_failures_total") + 1
            )
        finally:
            await cluster.stop()


async def test_database_gauges_fall_to_zero_while_postgres_is_away_and_recover(
    private_postgres: OwnPostgres, clients: list[WireClient]
) -> None:
    """PostgreSQL stops: database_up 0 at the next scrape, a send's failed commit is counted,
    the lease is lost; PostgreSQL is back: both are 1 again, by themselves."""
    async with private_postgres.fresh_database() as db:
        cluster = InProcessCluster(cluster_settings(db, redis_url(), node_lease=1.0), nodes=1)
        await cluster.start()
        try:
            ann = await user(cluster.node_url(0), "ann")
            clients.append(ann)
            await ann.ok("create_room", room="Lobby")
            before = await scrape_node(cluster, 0)
            assert value(before, "clubroom_database_up") == 1
            await asyncio.to_thread(private_postgres.stop, "immediate")
            try:
                down = await scrape_node(cluster, 0)
                assert value(down, "clubroom_database_up") == 0
                refused = await ann.call("send", room="Lobby", text="lost to the outage")
                assert refused["code"] == "unavailable"
                await until_scraped(cluster, 0, "clubroom_cluster_lease_held", 0)
            finally:
                await asyncio.to_thread(private_postgres.start)
            await until_scraped(cluster, 0, "clubroom_database_up", 1)
            after = await until_scraped(cluster, 0, "clubroom_cluster_lease_held", 1)
        finally:
            await cluster.stop()
    failures = value(after, "clubroom_store_commit_failures_total", reason="unavailable")
    assert failures > value(before, "clubroom_store_commit_failures_total", reason="unavailable")

"""The product's client on a cluster: a node goes away, the client carries on on another."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clubroom_tui.client import ClubroomClient, ConnectionState
from tests.cluster.harness import ProcessCluster
from tests.databases import fresh_postgres
from tests.services import redis_url
from tests.tui.conftest import PASSWORD, fast_client, wait_for, wait_ready


@pytest.fixture
async def cluster() -> AsyncIterator[ProcessCluster]:
    """Two nodes on a fresh database and the machine's Redis."""
    async with fresh_postgres() as db:
        nodes = ProcessCluster(db, redis_url(), ("--grace", "5"), nodes=2)
        await nodes.start()
        try:
            yield nodes
        finally:
            await nodes.stop()


async def test_a_node_restart_is_ridden_through_on_another_node(
    cluster: ProcessCluster,
) -> None:
    """SIGTERM on the client's node: it reconnects to the other node, is back in its room,
    and the message typed meanwhile arrives once."""
    urls = [cluster.url(0), cluster.url(1)]
    ann: ClubroomClient = fast_client(urls)
    bob: ClubroomClient = fast_client(urls)
    try:
        for client, name in ((ann, "ann"), (bob, "bob")):
            await client.start()
            await wait_ready(client)
            await client.register(name, PASSWORD)
        await ann.create_room("lobby")
        await bob.join_room("lobby")
        node = urls.index(ann.current_url)
        await cluster.terminate(node)
        await wait_for(
            lambda: ann.state is ConnectionState.CONNECTED and ann.current_url == urls[1 - node],
            "ann to be back, on the other node",
        )
        sent = await ann.send("lobby", "still here")
        bob_room = bob.rooms["lobby"]
        await wait_for(
            lambda: [m.id for m in bob_room.messages if m.text == "still here"] == [sent.id],
            "bob to see ann's message once",
        )
    finally:
        await ann.close()
        await bob.close()

"""Limits a client might multiply by spreading over nodes: one budget for the whole cluster.

Each test talks to all three nodes of an in-process cluster explicitly (node
by node, in turn), so a per-node limit would let through three times as much.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.harness import InProcessCluster
from tests.conftest import MakeServer
from tests.wsclient import PASSWORD, WireClient, resumed, user

pytestmark = pytest.mark.parametrize("db_backend", ["cluster"], indirect=True)
NODES = 3


async def cluster_with(make_server: MakeServer, **settings: Any) -> InProcessCluster:
    cluster = await make_server(**settings)
    assert isinstance(cluster, InProcessCluster)
    return cluster


async def everywhere(
    cluster: InProcessCluster, token: str, opened: list[WireClient]
) -> list[WireClient]:
    """One connection of the same user on each node."""
    found = [await resumed(cluster.node_url(i), token) for i in range(NODES)]
    opened.extend(found)
    return found


async def test_password_guesses_for_one_user_share_one_budget(
    make_server: MakeServer, clients: list[WireClient]
) -> None:
    """Three wrong passwords for Ann, one on each node: the fourth, anywhere, is refused."""
    cluster = await cluster_with(
        make_server, login_failures_per_user=3, login_failures_per_address=0
    )
    clients.append(await user(cluster.node_url(0), "ann"))
    guessers = [await WireClient.open(cluster.node_url(i)) for i in range(NODES)]
    clients.extend(guessers)
    codes = []
    for round_ in range(2):
        for guesser in guessers:
            reply = await guesser.call("login", username="ann", password=f"wrong{round_}")
            codes.append(reply["code"])
    assert codes == ["invalid_credentials"] * 3 + ["too_many_attempts"] * 3
    right = await guessers[1].call("login", username="ann", password=PASSWORD)
    assert right["code"] == "too_many_attempts", "not even the right password, for a while"


async def test_registrations_from_one_address_share_one_budget(
    make_server: MakeServer, clients: list[WireClient]
) -> None:
    """Two registrations per address: the third, on a third node, is refused."""
    cluster = await cluster_with(make_server, registrations_per_address=2)
    replies = []
    for i, name in enumerate(("ann", "bob", "cat")):
        client = await WireClient.open(cluster.node_url(i))
        clients.append(client)
        replies.append(await client.call("register", username=name, password=PASSWORD))
    assert [r["type"] for r in replies] == ["welcome", "welcome", "error"]
    assert replies[2]["code"] == "too_many_attempts" and replies[2]["retry_after"] > 0


async def test_room_joins_share_one_rate(
    make_server: MakeServer, clients: list[WireClient]
) -> None:
    """A burst of 3 room creations and joins, spent over three nodes, is one burst."""
    cluster = await cluster_with(make_server, room_rate_limit=0.01, room_rate_burst=3)
    ann = await user(cluster.node_url(0), "ann")
    clients.append(ann)
    nodes = await everywhere(cluster, ann.token, clients)
    codes = []
    for i, client in enumerate(nodes * 2):
        reply = await client.call("create_room", room=f"Room{i}")
        codes.append(reply["type"] if reply["type"] != "error" else reply["code"])
    assert codes == ["joined"] * 3 + ["rate_limited"] * 3


async def test_message_changes_share_the_message_rate(
    make_server: MakeServer, clients: list[WireClient]
) -> None:
    """Edits and reactions count against the one per-user message budget on every node."""
    cluster = await cluster_with(make_server, rate_limit=0.01, rate_burst=4)
    ann = await user(cluster.node_url(0), "ann")
    clients.append(ann)
    await ann.ok("create_room", room="Lobby")
    sent = (await ann.ok("send", room="Lobby", text="helo"))["message"]
    nodes = await everywhere(cluster, ann.token, clients)
    for client in nodes:
        await client.ok("join_room", room="Lobby")
    replies = [
        await nodes[0].call("edit", room="Lobby", message=sent["id"], text="hello"),
        await nodes[1].call("react", room="Lobby", message=sent["id"], emoji="👍"),
        await nodes[2].call("react", room="Lobby", message=sent["id"], emoji="🎉"),
        await nodes[0].call("send", room="Lobby", text="one more"),
    ]
    assert [r["type"] for r in replies] == ["changed", "changed", "changed", "error"]
    assert replies[3]["code"] == "rate_limited"
    again = await nodes[1].call("edit", room="Lobby", message=sent["id"], text="hi")
    assert again["code"] == "rate_limited"

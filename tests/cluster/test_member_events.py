"""Member lists and member events across nodes: every member named once, none missing."""

from __future__ import annotations

import asyncio

from tests.cluster.harness import ProcessCluster
from tests.cluster.test_failures import (
    cluster,  # noqa: F401 - fixtures
    db,  # noqa: F401
    on_node,
)
from tests.wsclient import WireClient

ROUNDS = 10


class View:
    """What one client believes the member list is: its ``joined`` list, then each event."""

    def __init__(self, client: WireClient, members: list[str]) -> None:
        self.client = client
        self.members = set(members)
        assert len(self.members) == len(members), f"a duplicate in {members}"

    async def until(self, expected: set[str]) -> None:
        """Apply member events until the view is ``expected``; none may contradict it."""
        while self.members != expected:
            event = await self.client.event()
            name = event.get("username")
            if event["type"] == "member_joined":
                assert name not in self.members, f"{name} joined twice for {self.client.username}"
                self.members.add(name)
            elif event["type"] == "member_left":
                assert name in self.members, f"{name} left unseen for {self.client.username}"
                self.members.discard(name)
        await self.client.no_event()  # and nothing more: no late duplicate


async def test_two_joiners_on_two_nodes_see_a_consistent_member_list(
    cluster: ProcessCluster,  # noqa: F811
    clients: list[WireClient],
) -> None:
    """Bob (node 1) and Cat (node 2) join Ann's room at the same moment, many times: each
    one's list plus the events after it names every member exactly once; Ann's too."""
    ann = await on_node(cluster, 0, "ann", clients)
    bob = await on_node(cluster, 1, "bob", clients)
    cat = await on_node(cluster, 2, "cat", clients)
    await ann.ok("create_room", room="Lobby")
    hosts = View(ann, ["ann"])
    everyone = {"ann", "bob", "cat"}
    for _ in range(ROUNDS):
        joined = await asyncio.gather(
            bob.ok("join_room", room="Lobby"), cat.ok("join_room", room="Lobby")
        )
        views = [View(c, j["members"]) for c, j in zip((bob, cat), joined, strict=True)]
        for view in (*views, hosts):
            await view.until(everyone)
        await asyncio.gather(bob.ok("leave_room", room="Lobby"), cat.ok("leave_room", room="Lobby"))
        await hosts.until({"ann"})

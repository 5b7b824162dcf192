"""Typing indicators against a real server, with the typing clock moved by hand (no sleeps)."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer
from tests.fakeclock import FakeClock
from tests.server.conftest import Connect
from tests.wsclient import WireClient, in_room


@pytest.fixture
def clock(server: RunningServer) -> FakeClock:
    """The server's typing trackers (every node's, on a cluster) run on a clock the test
    advances; on a cluster the typist's node relays over the bus, paced through Redis."""
    fake = FakeClock()
    for app in getattr(server, "apps", [server.app]):
        assert app is not None and app.conversation is not None
        app.conversation.typing.clock = fake
    return fake


async def pair(connect: Connect) -> tuple[WireClient, WireClient]:
    ann, bob = await connect("ann"), await connect("bob")
    await in_room([ann, bob])
    return ann, bob


def typing(username: str, state: str) -> dict[str, str]:
    return {"type": "typing", "room": "Lobby", "username": username, "state": state}


async def test_typing_is_relayed_to_others_only(connect: Connect, clock: FakeClock) -> None:
    """An active state reaches the room's other members, not the typist."""
    ann, bob = await pair(connect)
    assert (await ann.ok("typing", room="Lobby", state="active"))["type"] == "ok"
    assert await bob.event("typing") == typing("ann", "active")
    await ann.no_event()


async def test_renewals_are_not_relayed_and_changes_wait_for_the_window(
    connect: Connect, clock: FakeClock
) -> None:
    """Within 2.5 s a renewal is dropped and a change waits; the latest state goes out then."""
    ann, bob = await pair(connect)
    await ann.ok("typing", room="Lobby", state="active")
    assert await bob.event("typing") == typing("ann", "active")
    await ann.ok("typing", room="Lobby", state="active")
    clock.advance(1.0)
    await ann.ok("typing", room="Lobby", state="paused")
    await bob.no_event()
    clock.advance(1.6)
    assert await bob.event("typing") == typing("ann", "paused")


async def test_active_expires_after_six_seconds(connect: Connect, clock: FakeClock) -> None:
    """An active state not renewed ends with a relayed done after 6 s, not before."""
    ann, bob = await pair(connect)
    await ann.ok("typing", room="Lobby", state="active")
    await bob.event("typing")
    clock.advance(5.9)
    await bob.no_event()
    clock.advance(0.2)
    assert await bob.event("typing") == typing("ann", "done")


async def test_sending_and_disconnecting_end_typing(connect: Connect, clock: FakeClock) -> None:
    """A sent message ends the sender's typing at once; so does a dropped connection."""
    ann, bob = await pair(connect)
    await ann.ok("typing", room="Lobby", state="active")
    await bob.event("typing")
    await ann.ok("send", room="Lobby", text="hi")
    assert await bob.event("typing") == typing("ann", "done")
    clock.advance(3)
    await bob.ok("typing", room="Lobby", state="active")
    assert await ann.event("typing") == typing("bob", "active")
    await bob.close()
    assert await ann.event("typing") == typing("bob", "done")


async def test_typing_needs_the_room_and_a_known_state(connect: Connect, clock: FakeClock) -> None:
    """Typing in a room not joined is not_in_room; an unknown state is bad_request."""
    ann, _ = await pair(connect)
    assert (await ann.call("typing", room="Elsewhere", state="active"))["code"] == "not_in_room"
    assert (await ann.call("typing", room="Lobby", state="shouting"))["code"] == "bad_request"


async def test_one_users_devices_share_one_relay_window(connect: Connect, clock: FakeClock) -> None:
    """Ann types on two devices (on a cluster, two nodes): still one relay per window."""
    ann, bob = await pair(connect)
    again = await connect()
    await again.ok("resume", token=ann.token)
    await again.ok("join_room", room="Lobby")
    await ann.ok("typing", room="Lobby", state="active")
    assert await bob.event("typing") == typing("ann", "active")
    clock.advance(1.0)
    await again.ok("typing", room="Lobby", state="paused")
    await bob.no_event()
    clock.advance(1.6)
    assert await bob.event("typing") == typing("ann", "paused")

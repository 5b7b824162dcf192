"""Churn leaves nothing behind: every table keyed by something that comes and goes shrinks back.

Issue 17's long run saw the server's memory grow while users came and went.
Here a real server (in this process, so its tables can be counted) gets many
rounds of what users do — connect, register, log in (once with a wrong
password), resume, create a room, join, type, send (a nonce twice), search,
move between rooms, leave, log out, drop without leaving and come back within
the grace, drop and stay away past it, and newcomers who make a room of their
own and go for good. After the churn, the grace and the pruning timers, no
in-memory table is larger than before the churn.

What is counted is found, not listed: every dict, set, list and deque held by
an object of the server's own code reachable from the app (rooms, members,
connections, limits, typing, cluster tables...) and every such table at the
top of its modules, summed per class and attribute. So a table added later,
keyed by a user, room, connection, address, token or nonce and never emptied,
fails here whatever it is called. On the cluster every node is counted.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import itertools
import sys
import weakref
from collections import Counter, deque
from collections.abc import Iterator

import pytest

import protocol
from clubroom_server.app import Clubroom
from clubroom_server.auth import TokenBucket
from clubroom_server.collector import ClosedConnections, freeze_startup
from clubroom_server.typing_state import TypingTracker
from protocol import TypingState
from tests.conftest import MakeServer, RunningServer
from tests.fakeclock import FakeClock
from tests.waiting import wait_until
from tests.wsclient import PASSWORD, WireClient, resumed

ROUNDS = 12
RESIDENTS = 6  # stay for the whole test (some drop and come back), in the two chat rooms
ROOMS = ("Lobby", "Den")
TABLES = (dict, set, frozenset, list, deque)
OUR_MODULES = ("clubroom_server", "protocol")

# Every limit on, but quick to refill; timers short: the test waits for the
# grace, the pruning of the limits' tables and the typing window, not minutes.
QUICK_TIMERS = {
    "grace": 0.5,
    "login_window": 0.5,  # also how often the limits' tables are pruned
    "rate_limit": 1000.0,
    "room_rate_limit": 1000.0,
    "registrations_per_address": 10_000,
    "registrations_total": 10_000,
    "registration_window": 0.5,
}


def _ours(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] in OUR_MODULES


def _attributes(obj: object) -> Iterator[tuple[str, object]]:
    """Instance attributes, ``__slots__`` ones included."""
    yield from getattr(obj, "__dict__", {}).items()
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            with contextlib.suppress(AttributeError):
                yield name, getattr(obj, name)


def _elements(table: object) -> Iterator[object]:
    if isinstance(table, dict):
        yield from table.keys()
        yield from table.values()
    else:
        yield from table  # type: ignore[misc]


def table_sizes(apps: list[Clubroom]) -> Counter[str]:
    """Entries per ``Class.attribute`` (summed over instances) and per module-level table."""
    sizes: Counter[str] = Counter()
    seen: set[int] = set()
    stack: list[object] = list(apps)
    while stack:
        obj = stack.pop()
        if inspect.ismethod(obj):
            obj = obj.__self__  # handlers and hooks lead to the objects that own them
        if id(obj) in seen or not _ours(obj):
            continue
        seen.add(id(obj))
        for name, value in _attributes(obj):
            if isinstance(value, TABLES):
                sizes[f"{type(obj).__name__}.{name}"] += len(value)
                stack.extend(_elements(value))
            else:
                stack.append(value)
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] not in OUR_MODULES:
            continue
        for name, value in vars(module).items():
            if not name.startswith("__") and isinstance(value, TABLES):
                sizes[f"{module_name}.{name}"] += len(value)
    return sizes


def apps_of(server: RunningServer) -> list[Clubroom]:
    """The server's app, or every node's on a cluster."""
    apps = getattr(server, "apps", None) or [server.app]
    return [app for app in apps if app is not None]


def present(apps: list[Clubroom], room: str, username: str) -> bool:
    """Is the user a member of the room (connected or in grace) on any node?"""
    key = protocol.username_key(username)
    for app in apps:
        live = app.service.rooms.get(protocol.room_key(room))
        if live is not None and key in live.members:
            return True
    return False


class Crowd:
    """The residents (each always on the node it first reached) and the newcomers' counter."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.urls: dict[str, str] = {}
        self.clients: dict[str, WireClient] = {}
        self.room_of: dict[str, str] = {}
        self._numbers = itertools.count()

    async def settle_in(self) -> None:
        for n in range(RESIDENTS):
            name, room = f"resident{n}", ROOMS[n % 2]
            self.urls[name] = self.server.url  # a cluster hands out its nodes in turn
            client = await WireClient.open(self.urls[name])
            await client.register(name)
            await client.ok("create_room" if n < len(ROOMS) else "join_room", room=room)
            self.clients[name], self.room_of[name] = client, room

    async def chat(self, turn: int) -> None:
        """A resident types, sends (its nonce twice: one message) and searches."""
        name = f"resident{turn % RESIDENTS}"
        client, room = self.clients[name], self.room_of[name]
        await client.ok("typing", room=room, state="active")
        text, nonce = f"round {turn} @resident0", f"n{turn}"
        first = await client.ok("send", room=room, text=text, nonce=nonce)
        again = await client.ok("send", room=room, text=text, nonce=nonce)
        assert again["message"]["id"] == first["message"]["id"]
        await client.ok("search", room=room, query="round")

    async def move(self, turn: int) -> None:
        """A resident goes to the other room and back."""
        name = f"resident{(turn + 1) % RESIDENTS}"
        client, room = self.clients[name], self.room_of[name]
        other = ROOMS[1 - ROOMS.index(room)]
        await client.ok("leave_room", room=room)
        await client.ok("join_room", room=other)
        await client.ok("leave_room", room=other)
        await client.ok("join_room", room=room)

    async def reconnect(self, turn: int, *, after_grace: bool) -> None:
        """A resident's connection drops; a new one resumes (or logs in) and rejoins."""
        name = f"resident{(turn + 2) % RESIDENTS}"
        old = self.clients[name]
        old.ws.transport.abort()
        await old.wait_closed()
        if after_grace:  # stays away until the grace has taken the user out of the room
            await wait_until(lambda: not present(apps_of(self.server), self.room_of[name], name))
            client = await WireClient.open(self.urls[name])
            reply = await client.ok("login", username=name, password=PASSWORD)
            client.token = reply["token"]
        else:
            client = await resumed(self.urls[name], old.token)
            client.token = old.token
        await client.ok("join_room", room=self.room_of[name])
        self.clients[name] = client
        await old.close()

    async def newcomers(self) -> None:
        """Two users register, make a room, join a chat room, type, leave or log out, and go."""
        for _ in range(2):
            number = next(self._numbers)
            name, own = f"newcomer{number}", f"own room {number}"
            client = await WireClient.open(self.server.url)
            wrong = await client.call("login", username=name, password="wrong-horse-1!")
            assert wrong["code"] == "invalid_credentials"
            await client.register(name)
            await client.ok("create_room", room=own)
            await client.ok("typing", room=own, state="active")
            await client.ok("send", room=own, text="hello?", nonce="first")
            await client.ok("join_room", room=ROOMS[number % 2])
            if number % 2:
                await client.ok("leave_room", room=own)
                await client.ok("leave_room", room=ROOMS[number % 2])
            else:
                await client.ok("logout")
            await client.close()

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def test_churn_leaves_every_table_as_it_was(make_server: MakeServer) -> None:
    """Rounds of joins, leaves, drops, returns and newcomers: no table ends up any larger."""
    server = await make_server(**QUICK_TIMERS)
    apps = apps_of(server)
    for app in apps:
        assert app.conversation is not None
        app.conversation.typing.relay_every = 0.2  # ends are remembered for one window
    crowd = Crowd(server)
    await crowd.settle_in()
    settled = await settled_sizes(apps, within=5.0)
    for turn in range(ROUNDS):
        await crowd.chat(turn)
        await crowd.move(turn)
        await crowd.reconnect(turn, after_grace=turn % 6 == 5)
        await crowd.newcomers()
    after = await settled_sizes(apps, within=10.0, target=settled)
    grown = {name: (settled[name], size) for name, size in after.items() if size > settled[name]}
    assert not grown, f"tables larger after {ROUNDS} rounds of churn (before, after): {grown}"
    # The newcomers' rooms went with them; the chat rooms stayed.
    await wait_until(lambda: rooms_stored(server, len(ROOMS)))
    await crowd.close()


async def settled_sizes(
    apps: list[Clubroom], within: float, target: Counter[str] | None = None
) -> Counter[str]:
    """The table sizes once the timers have run: graces, pruning, typing windows.

    Polls until the sizes are no larger than ``target`` (or, without one, stop
    changing); returns what they are then, so that a leak fails the assertion
    with its name rather than a timeout.
    """
    last: list[Counter[str]] = [table_sizes(apps)]

    def settled() -> bool:
        now = table_sizes(apps)
        done = (
            all(size <= target[name] for name, size in now.items())
            if target is not None
            else now == last[0] and _idle(now)
        )
        last[0] = now
        return done

    with contextlib.suppress(TimeoutError):
        await wait_until(settled, within=within)
    return last[0]


def _idle(sizes: Counter[str]) -> bool:
    """No timer-driven table holds anything yet to expire (a baseline must not)."""
    return all(
        sizes[name] == 0
        for name in ("TokenBucket._buckets", "AttemptWindow._failures", "TypingTracker._ended")
    )


async def rooms_stored(server: RunningServer, expected: int) -> bool:
    return await server.rows("SELECT COUNT(*) FROM rooms") == [(expected,)]


def test_a_refilled_bucket_is_forgotten_and_pruning_changes_no_answer() -> None:
    """Users who spent their tokens long enough ago leave the table; every answer stays the same."""
    now = [1000.0]
    pruned, kept = (TokenBucket(2.0, 4, clock=lambda: now[0]) for _ in range(2))
    for bucket in (pruned, kept):
        for _ in range(4):
            assert bucket.take("ann") is None  # ann empties hers
        assert bucket.take("bob") is None  # bob spends one
    now[0] += 0.6  # bob's bucket is full again (3 + 1.2), ann's is not (1.2)
    pruned.prune()
    assert len(pruned) == 1 and len(kept) == 2
    answers = []
    for bucket in (pruned, kept):
        answers.append([bucket.take(key) for key in ("ann", "ann", "bob", "bob", "carl")])
    assert answers[0] == answers[1] == [None, pytest.approx(0.4), None, None, None]
    now[0] += 60
    pruned.prune()
    assert len(pruned) == 0


def test_typing_ends_are_forgotten_after_one_window() -> None:
    """A hundred typists come and go: the ends that pace their next start go after a window."""
    clock = FakeClock()
    relayed: list[tuple[int, str, TypingState]] = []
    tracker = TypingTracker(lambda *relay: relayed.append(relay), clock=clock, relay_every=2.5)
    for n in range(100):
        tracker.update(7, f"key{n}", f"user{n}", TypingState.ACTIVE)
        tracker.end(7, f"key{n}")
    assert len(relayed) == 200 and len(tracker) == 0
    tracker.update(7, "key0", "user0", TypingState.ACTIVE)  # within the window: waits for it
    assert len(relayed) == 200
    clock.advance(2.5)
    assert relayed[-1] == (7, "user0", TypingState.ACTIVE)
    tracker.end(7, "key0")
    clock.advance(5.0)
    assert tracker._ended == {}


def test_closed_connections_are_collected_in_proportion_and_never_in_a_storm() -> None:
    """A full collection after 64 closes (or a quarter of those open), at most every 10 s."""
    now, runs = [1000.0], []
    closed = ClosedConnections(collect=lambda: runs.append(now[0]), clock=lambda: now[0])
    now[0] += 60
    for _ in range(63):
        closed.closed(still_open=100)
    assert runs == []
    closed.closed(still_open=100)  # the 64th: 64 > a quarter of 100
    assert runs == [1060.0]
    for _ in range(64):
        closed.closed(still_open=100)  # enough again, but within 10 s of the last
    assert runs == [1060.0]
    now[0] += 10
    closed.closed(still_open=1000)  # 65 closed, but a quarter of 1,000 is 250
    assert runs == [1060.0]
    for _ in range(185):
        closed.closed(still_open=1000)
    assert runs == [1060.0, 1070.0] and closed.collections == 2


class _Node:
    """An object that can hold a reference cycle to itself."""

    myself: _Node


def _cycle() -> _Node:
    node = _Node()
    node.myself = node  # only the cyclic collector can free it
    return node


def test_start_up_is_frozen_out_of_collections_after_its_garbage_is_collected() -> None:
    """What lives after start-up is never examined again; start-up's garbage is not kept."""
    freed: list[str] = []
    garbage = _cycle()
    weakref.finalize(garbage, freed.append, "garbage")
    del garbage
    kept = _cycle()
    try:
        frozen = freeze_startup()
        assert freed == ["garbage"], "start-up's garbage was frozen instead of collected"
        assert frozen == gc.get_freeze_count() > 0
        assert not any(tracked is kept for tracked in gc.get_objects()), "not frozen"
    finally:
        gc.unfreeze()  # the rest of this test process collects as usual

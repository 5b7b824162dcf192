"""Login and registration throttling under concurrency, and bounded throttle tables."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from clubroom_server.auth import AttemptWindow, FairQueue, HasherBusy
from tests.conftest import MakeServer, RunningServer
from tests.wsclient import PASSWORD, WireClient, user

STORM_ADDRESS = "127.0.0.2"  # Linux routes all of 127/8 to loopback: a second "address"


async def clients_from(url: str, count: int, address: str = "127.0.0.1") -> list[WireClient]:
    """``count`` anonymous connections whose TCP source address is ``address``."""
    return list(
        await asyncio.gather(*(WireClient.open(url, local_addr=(address, 0)) for _ in range(count)))
    )


async def close_all(clients: list[WireClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


def verifications(server: RunningServer) -> int:
    assert server.app is not None
    return server.app.hasher.verifications


async def test_concurrent_guesses_cannot_pass_the_per_user_limit(make_server: MakeServer) -> None:
    """100 simultaneous guesses for one user: at most 5 are verified; the right one is refused."""
    server = await make_server(
        login_failures_per_user=5, login_failures_per_address=20, max_handshakes_per_address=0
    )
    await (await user(server.url, "ann")).close()
    guessers = await clients_from(server.url, 100)
    before = verifications(server)
    passwords = [f"Wrong-guess-{n}!" for n in range(99)] + [PASSWORD]
    replies = await asyncio.gather(
        *(
            c.call("login", username="ann", password=p)
            for c, p in zip(guessers, passwords, strict=True)
        )
    )
    codes = [reply.get("code", reply["type"]) for reply in replies]
    assert "welcome" not in codes, "the right password got in past the limit"
    assert verifications(server) - before <= 5
    assert codes.count("invalid_credentials") <= 5
    assert all(r["retry_after"] > 0 for r in replies if r.get("code") == "too_many_attempts")
    await close_all(guessers)


async def test_a_storm_from_one_address_does_not_slow_another(make_server: MakeServer) -> None:
    """150 logins at once from one address run at most 20 verifications; another logs in fast.

    Measured on a 2-core shared machine with the cheapest argon2 profile: the
    calm login took about 0.025 s during the storm; 2 s is a generous bound.
    """
    server = await make_server(login_failures_per_address=20, max_handshakes_per_address=0)
    await (await user(server.url, "calm")).close()
    storm = await clients_from(server.url, 150, STORM_ADDRESS)
    calm = await WireClient.open(server.url)
    before = verifications(server)
    storming = asyncio.gather(
        *(c.call("login", username=f"nobody{n}", password=PASSWORD) for n, c in enumerate(storm))
    )
    started = time.monotonic()
    welcome = await calm.ok("login", username="calm", password=PASSWORD)
    took = time.monotonic() - started
    replies = await storming
    assert welcome["username"] == "calm" and took < 2.0
    codes = [reply["code"] for reply in replies]
    assert codes.count("invalid_credentials") <= 20
    assert codes.count("too_many_attempts") >= 130
    assert verifications(server) - before <= 21, "20 storm guesses and the calm login"
    await close_all([*storm, calm])


async def test_a_login_with_an_invalid_username_is_refused_and_counted(
    make_server: MakeServer,
) -> None:
    """A 60,000-character username is invalid_credentials, counts for the address, stores no key."""
    server = await make_server(login_failures_per_address=3)
    client = await WireClient.open(server.url)
    for _ in range(3):
        reply = await client.call("login", username="u" * 60_000, password=PASSWORD)
        assert reply["code"] == "invalid_credentials"
    reply = await client.call("login", username="u" * 60_000, password=PASSWORD)
    assert reply["code"] == "too_many_attempts"
    assert server.app is not None
    by_user, by_address = server.app.service.throttle_windows[:2]
    assert len(by_user) == 0 and len(by_address) == 1
    await client.close()


async def test_throttle_tables_empty_themselves_after_the_window(make_server: MakeServer) -> None:
    """Failure records of an idle server are dropped by a timer once the window has passed."""
    server = await make_server(login_window=0.5)
    clients = await clients_from(server.url, 5)
    for n, client in enumerate(clients):
        await client.call("login", username=f"someone{n}", password=PASSWORD)
    assert server.app is not None
    windows = server.app.service.throttle_windows
    assert len(windows[0]) == 5
    # Poll the raw tables: ``len`` itself prunes, so it would hide a missing timer.
    await wait_for_empty(windows)
    await close_all(clients)


async def wait_for_empty(windows: tuple[AttemptWindow, ...]) -> None:
    from tests.waiting import wait_until

    await wait_until(lambda: not any(w._failures for w in windows), within=5)


def test_attempt_window_forgets_everything_after_the_window() -> None:
    """With an injected clock, 100 keys' failures are all gone once the window has passed."""
    now = [1000.0]
    window = AttemptWindow(limit=5, window=60, clock=lambda: now[0])
    for n in range(100):
        window.reserve(f"user{n}")
        window.settle(f"user{n}", failed=True)
    assert len(window) == 100
    now[0] += 59
    assert len(window) == 100
    now[0] += 2
    window.prune()
    assert window._failures == {} and window._in_flight == {}


def test_attempt_window_counts_attempts_in_flight() -> None:
    """Reserved attempts block further ones until settled; a success frees its place."""
    now = [0.0]
    window = AttemptWindow(limit=2, window=60, clock=lambda: now[0])
    window.reserve("ann")
    window.reserve("ann")
    assert window.retry_after("ann") is not None
    window.settle("ann", failed=False)
    assert window.retry_after("ann") is None
    window.settle("ann", failed=True)
    window.reserve("ann")
    window.settle("ann", failed=True)
    assert window.retry_after("ann") == pytest.approx(60)


def test_attempt_window_is_bounded_in_keys() -> None:
    """However many keys fail, the table keeps at most ``max_keys`` of them."""
    window = AttemptWindow(limit=5, window=60, max_keys=10)
    for n in range(1000):
        window.record(f"k{n}")
    assert len(window) == 10


async def test_fair_queue_refuses_when_full_and_serves_calm_keys_first() -> None:
    """Waiting jobs are bounded (HasherBusy), and a calm key jumps a storm's backlog."""
    queue = FairQueue(slots=1, max_waiting=3)
    order: list[str] = []
    release = asyncio.Event()

    async def job(key: str, name: str) -> None:
        async with queue.slot(key):
            order.append(name)
            await release.wait()

    running = [asyncio.create_task(job("storm", "s0"))]
    await asyncio.sleep(0)
    running += [asyncio.create_task(job("storm", f"s{n}")) for n in (1, 2)]
    await asyncio.sleep(0)
    running.append(asyncio.create_task(job("calm", "calm")))
    await asyncio.sleep(0)
    assert queue.waiting == 3
    with pytest.raises(HasherBusy) as busy:
        await job("storm", "refused")
    assert busy.value.retry_after > 0
    release.set()
    await asyncio.gather(*running)
    assert order == ["s0", "s1", "calm", "s2"]


async def test_registration_is_throttled_per_address_and_probes_pay_too(
    make_server: MakeServer,
) -> None:
    """After the address's budget, register is refused, whether new names or taken ones."""
    server = await make_server(registrations_per_address=3)
    client = await WireClient.open(server.url)
    await client.register("ann")
    await client.ok("logout")
    probe = await client.call("register", username="ann", password=PASSWORD)
    assert probe["code"] == "username_taken"
    await client.register("bob")
    await client.ok("logout")
    for name in ("carl", "ann"):
        reply = await client.call("register", username=name, password=PASSWORD)
        assert reply["code"] == "too_many_attempts" and reply["retry_after"] > 0
    other = await WireClient.open(server.url, local_addr=(STORM_ADDRESS, 0))
    assert (await other.register("dora"))["type"] == "welcome", "another address may register"
    await close_all([client, other])


async def test_registration_is_throttled_in_total(make_server: MakeServer) -> None:
    """The server-wide registration budget holds across addresses."""
    server = await make_server(registrations_total=2)
    clients = [await WireClient.open(server.url, local_addr=(f"127.0.0.{n}", 0)) for n in (1, 2, 3)]
    await clients[0].register("ann")
    await clients[1].register("bob")
    reply: dict[str, Any] = await clients[2].call("register", username="carl", password=PASSWORD)
    assert reply["code"] == "too_many_attempts"
    await close_all(clients)


async def test_a_burst_of_honest_resumes_is_not_refused(make_server: MakeServer) -> None:
    """30 connections resuming one valid token at once all get in (a restart's reconnects)."""
    server = await make_server(login_failures_per_address=5)
    ann = await user(server.url, "ann")
    clients = await clients_from(server.url, 30)
    replies = await asyncio.gather(*(c.call("resume", token=ann.token) for c in clients))
    assert {reply["type"] for reply in replies} == {"welcome"}
    await close_all([ann, *clients])

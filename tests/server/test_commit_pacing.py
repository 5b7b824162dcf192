"""Group-commit pacing: a stream of messages shares commits; a lone message never waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from clubroom_server.store.pacing import MAX_INTERVAL, CommitPacer
from tests.conftest import MakeServer
from tests.server.test_metrics import scrape, value
from tests.wsclient import WireClient, in_room, user


class FakeClock:
    """Time that moves only when the pacer sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def pacer(interval: float) -> tuple[CommitPacer, FakeClock]:
    clock = FakeClock()
    return CommitPacer(interval, clock=clock, sleep=clock.sleep), clock


async def test_a_write_after_a_quiet_spell_is_committed_at_once() -> None:
    paced, clock = pacer(0.01)
    await paced.wait_turn()
    clock.now += 5.0  # a chat's usual gap between messages
    await paced.wait_turn()
    assert clock.slept == []


async def test_a_stream_commits_at_most_once_per_interval() -> None:
    paced, clock = pacer(0.01)
    await paced.wait_turn()
    clock.now += 0.003  # the next write arrives 3 ms after the last commit started
    await paced.wait_turn()
    assert clock.slept == [0.007]  # it waits out the rest of the interval, gathering others
    clock.now += 0.012  # later than the interval: no wait
    await paced.wait_turn()
    assert clock.slept == [0.007]


async def test_closing_and_a_zero_interval_never_wait() -> None:
    paced, clock = pacer(0.01)
    await paced.wait_turn()
    await paced.wait_turn(hurry=True)
    unpaced, still = pacer(0.0)
    for _ in range(3):
        await unpaced.wait_turn()
    assert clock.slept == still.slept == []


@pytest.mark.parametrize("interval", [-0.001, MAX_INTERVAL + 0.001])
def test_an_interval_out_of_range_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="between 0 and"):
        CommitPacer(interval)


async def talk(client: WireClient, count: int) -> None:
    """One message at a time, each sent after the previous one is acknowledged (durable)."""
    for n in range(count):
        await client.ok("send", room="Lobby", text=f"{client.username} says {n}")


@pytest.mark.single_process
async def test_members_talking_at_once_share_commits_and_lose_nothing(
    make_server: MakeServer,
) -> None:
    """Four members each waiting for their own acknowledgement still share commits."""
    interval = 0.05
    server = await make_server(
        metrics_address="127.0.0.1:0", rate_limit=0, commit_interval=interval
    )
    talkers = [await user(server.url, f"talker{n}") for n in range(4)]
    reader = await user(server.url, "reader")
    await in_room([*talkers, reader])
    before = await scrape(server)
    started = time.monotonic()
    await asyncio.gather(*(talk(client, 10) for client in talkers))
    elapsed = time.monotonic() - started
    texts = [(await reader.event("message"))["message"]["text"] for _ in range(40)]
    after = await scrape(server)
    commits = value(after, "clubroom_store_commit_batch_writes_count") - value(
        before, "clubroom_store_commit_batch_writes_count"
    )
    for client in talkers:  # each member's own order is kept
        mine = [text for text in texts if text.startswith(f"{client.username} ")]
        assert mine == [f"{client.username} says {n}" for n in range(10)]
    assert commits < 40  # acknowledged one by one, yet committed together
    assert commits <= elapsed / interval + 1  # never more often than the interval allows

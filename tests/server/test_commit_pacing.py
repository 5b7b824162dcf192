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
    paced.finished(writes=1, more_waiting=True)  # others arrived while it committed: a stream
    clock.now += 0.003  # the next commit may start 3 ms after the last one started
    await paced.wait_turn()
    assert clock.slept == [0.007]  # it waits out the rest of the interval, gathering others
    paced.finished(writes=9, more_waiting=False)  # it gathered: still a stream
    clock.now += 0.004
    await paced.wait_turn()
    assert clock.slept == [0.007, 0.006]
    paced.finished(writes=4, more_waiting=False)
    clock.now += 0.012  # later than the interval: no wait
    await paced.wait_turn()
    assert clock.slept == [0.007, 0.006]


async def test_one_writer_waiting_for_each_commit_is_never_paced() -> None:
    """A script sending message after message, each after its ``sent``: no overlap, no wait
    (pacing it would hold it to one message per interval)."""
    paced, clock = pacer(0.01)
    for _ in range(5):
        await paced.wait_turn()
        paced.finished(writes=1, more_waiting=False)
        clock.now += 0.001  # its next message, a millisecond after the commit started
    assert clock.slept == []


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


@pytest.mark.single_process
async def test_one_member_sending_one_by_one_is_not_held_to_the_interval(
    make_server: MakeServer,
) -> None:
    """A script that waits for each ``sent`` before the next message is never paced.

    Paced, its ten messages would take at least nine whole intervals (0.9 s
    at the longest interval); unpaced, ten commits.
    """
    interval = MAX_INTERVAL
    server = await make_server(rate_limit=0, commit_interval=interval)
    poster = await user(server.url, "poster")
    await in_room([poster])
    started = time.monotonic()
    await talk(poster, 10)
    elapsed = time.monotonic() - started
    assert elapsed < 0.9 * 9 * interval, f"ten messages took {elapsed:.2f} s: paced"

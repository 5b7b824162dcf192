"""The shared limits themselves, on the test Redis and on a Redis that is not there."""

from __future__ import annotations

import asyncio
import logging

import pytest

from clubroom_server.auth import AttemptWindow, TokenBucket
from clubroom_server.limits import Attempts, Bucket, SharedLimits, Ticket
from tests.cluster.harness import bus_prefix
from tests.services import redis_url


async def test_concurrent_attempts_on_two_nodes_never_exceed_the_limit() -> None:
    """Twenty logins at once for one user through two nodes' limits: three get through,
    however the reservations interleave (Redis checks and reserves in one step)."""
    prefix = bus_prefix()
    nodes = [SharedLimits(redis_url(), prefix) for _ in range(2)]
    try:
        limits = [Attempts("login-user", AttemptWindow(3, 60), shared) for shared in nodes]
        tickets = await asyncio.gather(*(limits[i % 2].reserve("ann") for i in range(20)))
        admitted = [t for t in tickets if isinstance(t, Ticket)]
        assert len(admitted) == 3
        assert all(isinstance(t, float) and t > 0 for t in tickets if not isinstance(t, Ticket))
    finally:
        for shared in nodes:
            await shared.close()


async def test_a_redis_out_of_reach_leaves_the_local_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No Redis: nothing is refused for it, each node's own limit still holds, and the
    operator is told once, not per request."""
    caplog.set_level(logging.WARNING)
    shared = SharedLimits("redis://127.0.0.1:1/0", bus_prefix())
    try:
        bucket = Bucket("send", TokenBucket(0.01, 1), shared)
        assert await bucket.take("ann") is None
        assert await bucket.take("ann") is not None
        attempts = Attempts("login-user", AttemptWindow(1, 60), shared)
        ticket = await attempts.reserve("ann")
        assert isinstance(ticket, Ticket)
        await attempts.settle(ticket, failed=True)
        assert isinstance(await attempts.reserve("ann"), float)
    finally:
        await shared.close()
    warnings = [r for r in caplog.records if "out of reach" in r.getMessage()]
    assert len(warnings) == 1

"""Passwords, tokens and login throttling.

argon2id runs in a small thread pool: hashing is deliberately slow (about
125 ms at the default cost), so it must never run on the event loop, and the
pool's size bounds how much CPU a login storm can take from chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_BYTES = 32  # 256 bits
T = TypeVar("T")


class HasherBusy(Exception):
    """Too many hashings are already waiting: refuse now rather than queue for a minute."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"password hashing is busy; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class FairQueue:
    """Lets ``slots`` jobs run at once; the rest wait in per-key queues, served in turn.

    Keys are client addresses: a storm from one address then waits behind
    itself, while a login from a calm address is served at the next free
    slot. At most ``max_waiting`` jobs wait in all; beyond that a job is
    refused at once (``HasherBusy``) instead of queued.
    """

    def __init__(self, slots: int, max_waiting: int) -> None:
        self._free = max(1, slots)
        self._max_waiting = max_waiting
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        await self._acquire(key)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, key: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        if self._waiting >= self._max_waiting:
            raise HasherBusy(BUSY_RETRY_AFTER)
        turn = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(turn)
        self._waiting += 1
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was handed over just as we gave up
            else:
                self._forget(key, turn)
            raise

    def _forget(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self._waiting -= 1
            if not queue:
                del self._queues[key]

    def _release(self) -> None:
        """Hand the slot to the head of the next key's queue (round robin), or free it."""
        while self._queues:
            key = next(iter(self._queues))
            queue = self._queues.pop(key)
            turn = queue.popleft()
            if queue:
                self._queues[key] = queue  # to the back of the round
            self._waiting -= 1
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


BUSY_RETRY_AFTER = 2.0  # seconds: about what the queue of waiting hashings takes to drain


class PasswordHasher:
    """argon2id hashing and verification off the event loop, fairly shared between addresses.

    ``verifications`` counts the verifications actually run, so tests (and
    operators) can see that throttling bounds the work, not just the answers.
    """

    def __init__(
        self, parameters: argon2.Parameters, workers: int = 2, max_waiting: int = 32
    ) -> None:
        self._hasher = argon2.PasswordHasher.from_parameters(parameters)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers),
            thread_name_prefix="argon2",
            initializer=_yield_to_chat,
        )
        self._queue = FairQueue(max(1, workers), max_waiting)
        self.verifications = 0
        # Verified against when the username is unknown, so that an unknown
        # name costs the same work (and time) as a wrong password.
        self._decoy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str, key: str = "") -> str:
        """Hash a new password; ``key`` (the client address) is whose turn it takes."""
        async with self._queue.slot(key):
            return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str, key: str = "") -> bool:
        """True if the password matches; an absent hash costs as much as a wrong one.

        Raises ``HasherBusy`` at once when too many hashings already wait.
        """
        async with self._queue.slot(key):
            self.verifications += 1
            return await self._run(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(password_hash)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._decoy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


HASH_THREAD_NICENESS = 19  # the lowest priority, where SCHED_IDLE is not available


def _yield_to_chat() -> None:
    """Run this hashing thread only when chat leaves the CPU idle.

    A login storm then slows logins, not chat. Linux schedules threads on
    their own, and the lane threads argon2 starts for ``p > 1`` inherit the
    policy: ``SCHED_IDLE`` where allowed, else the lowest niceness.
    Elsewhere these calls would affect the whole process, so they are
    Linux-only.
    """
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, HASH_THREAD_NICENESS)


def new_token() -> str:
    """A random, URL-safe bearer token of 256 bits."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


IN_FLIGHT_RETRY_AFTER = 1.0  # seconds: a verification finishes well within this
MAX_KEYS = 100_000  # a bounded table even if an attacker has very many addresses


class AttemptWindow:
    """Counts attempts per key over the last ``window`` seconds, reserving before settling.

    An attempt is *reserved* before the slow work (an argon2 verification)
    and counts against the limit while it runs, then is *settled*: kept as
    a failure, or dropped. So however many arrive at once, at most ``limit``
    can be in flight or failed for one key in one window — checking first
    and recording after let 100 concurrent guesses all through.

    Keys are kept in the order of their last failure, so expired ones are
    dropped from the front on every call (amortised O(1)); ``prune`` is also
    run on a timer so an idle server forgets them. The table never holds more
    than ``max_keys`` keys (oldest dropped first). The clock is injectable so
    tests need not sleep.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}

    def __len__(self) -> int:
        """Keys remembered (failures or attempts in flight), after forgetting expired ones."""
        self.prune()
        return len(self._failures.keys() | self._in_flight.keys())

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None if it may now."""
        if self.limit <= 0:
            return None
        self.prune()
        failures = self._recent(key)
        used = len(failures) + self._in_flight.get(key, 0)
        if used < self.limit:
            return None
        expiring = used - self.limit  # this failure must expire to free one place
        if expiring < len(failures):
            return max(0.001, failures[expiring] + self.window - self._clock())
        return IN_FLIGHT_RETRY_AFTER  # only attempts in flight block: they settle soon

    def reserve(self, key: str) -> None:
        """Count one attempt as in flight (call only after ``retry_after`` said None)."""
        if self.limit > 0:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def settle(self, key: str, *, failed: bool) -> None:
        """End a reserved attempt: a failure stays counted for the window, else it is freed."""
        if self.limit <= 0:
            return
        remaining = self._in_flight.get(key, 0) - 1
        if remaining > 0:
            self._in_flight[key] = remaining
        else:
            self._in_flight.pop(key, None)
        if failed:
            self.record(key)

    def record(self, key: str) -> None:
        """Count one failure now (an attempt that was not reserved)."""
        if self.limit <= 0:
            return
        failures = self._failures.pop(key, None) or deque()
        failures.append(self._clock())
        while len(failures) > self.limit:
            failures.popleft()
        self._failures[key] = failures  # re-inserted last: the table stays in time order
        while len(self._failures) > self._max_keys:
            del self._failures[next(iter(self._failures))]

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def prune(self) -> None:
        """Forget every key whose last failure left the window."""
        horizon = self._clock() - self.window
        while self._failures:
            key = next(iter(self._failures))
            failures = self._failures[key]
            if failures[-1] > horizon:
                break
            del self._failures[key]

    def _recent(self, key: str) -> deque[float]:
        """The key's failures still inside the window."""
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        horizon = self._clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures


class TokenBucket:
    """A per-key token bucket: ``rate`` per second, bursts of ``burst``; rate 0 = off.

    Keys are users, who come and go: ``prune`` (run on a timer by the service)
    forgets every key whose bucket has filled up again, which is exactly the
    bucket a new key gets, so pruning changes no answer. The table then holds
    only the users who spent a token within the last pruning interval plus
    ``burst / rate`` seconds.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float | None:
        """Spend one token; return None if allowed, else seconds until one is free."""
        if self.rate <= 0:
            return None
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate

    def __len__(self) -> int:
        """Keys remembered (full buckets included until the next ``prune``)."""
        return len(self._buckets)

    def prune(self) -> None:
        """Forget every key whose bucket is full again (as good as never seen)."""
        now, rate, burst = self._clock(), self.rate, self.burst
        self._buckets = {
            key: (tokens, last)
            for key, (tokens, last) in self._buckets.items()
            if rate > 0 and tokens + (now - last) * rate < burst
        }

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_BYTES = 32  # 256 bits
T = TypeVar("T")


class PasswordHasher:
    """argon2id hashing and verification off the event loop."""

    def __init__(self, parameters: argon2.Parameters, workers: int = 2) -> None:
        self._hasher = argon2.PasswordHasher.from_parameters(parameters)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers),
            thread_name_prefix="argon2",
            initializer=_yield_to_chat,
        )
        # Verified against when the username is unknown, so that an unknown
        # name costs the same work (and time) as a wrong password.
        self._decoy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if the password matches; an absent hash costs as much as a wrong one."""
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


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds; says how long to wait.

    Used for failed logins per username and per address. The clock is
    injectable so tests need not sleep.
    """

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None if it may now."""
        events = self._recent(key)
        if self.limit <= 0 or len(events) < self.limit:
            return None
        return max(0.001, events[0] + self.window - self._clock())

    def record(self, key: str) -> None:
        self._recent(key)
        self._events.setdefault(key, deque()).append(self._clock())

    def clear(self, key: str) -> None:
        self._events.pop(key, None)

    def _recent(self, key: str) -> deque[float]:
        """The key's events still inside the window; an idle key is forgotten."""
        events = self._events.get(key)
        if events is None:
            return deque()
        horizon = self._clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
        return events


class TokenBucket:
    """A per-key token bucket: ``rate`` per second, bursts of ``burst``; rate 0 = off."""

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

"""Limits shared by every node of a cluster, kept in Redis, behind the in-memory ones.

A per-user or per-address limit kept in each node's memory is multiplied by
the number of nodes a client connects to. So every limit that matters for
security or for the room's peace has two layers:

* the **local** one (``auth.AttemptWindow``, ``auth.TokenBucket``): costs
  nothing, is the whole limit on one process, and alone holds while Redis is
  out of reach;
* on a cluster, a **shared** one in Redis, checked after the local one: one
  Lua script checks and spends atomically on Redis's own clock (``TIME``),
  so nodes need no synchronised clocks and two nodes can never spend the
  same token or the same attempt.

``Attempts`` and ``Bucket`` are the one interface the service uses for
both: on one process their shared part is None and they cost one extra
(synchronously finishing) await. When Redis cannot be asked the shared check
is skipped rather than refusing to chat or to log in — a client then gets at
most one local budget per node until Redis is back (logged once).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from clubroom_server.auth import AttemptWindow, TokenBucket

log = logging.getLogger(__name__)
T = TypeVar("T")

# KEYS[1] = the bucket; ARGV = rate per second, burst. Returns the wait in
# seconds as a string (0 = allowed and spent).
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(stored[1]) or burst
local at = tonumber(stored[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""

# An attempt window is a sorted set: one member per attempt in the window
# ("r:<id>" while in flight, "f:<id>" once failed), scored by its time in ms.
# KEYS[1] = the set; ARGV = limit, window ms, member. Returns the wait in ms
# (0 = reserved).
RESERVE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used >= limit then
    local freeing = redis.call('ZRANGE', KEYS[1], used - limit, used - limit, 'WITHSCORES')
    return math.max(1, tonumber(freeing[2]) + window - now)
end
if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
end
return 0
"""

# KEYS[1] = the set; ARGV = window ms, reserved member ("" = none), failed 0/1,
# new failure member. A failure is counted from now (as one process does).
SETTLE = """
if ARGV[2] ~= '' then
    redis.call('ZREM', KEYS[1], ARGV[2])
end
if ARGV[3] == '1' then
    local clock = redis.call('TIME')
    local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return 0
"""

# KEYS[1] = the set: forget its failures, keep the attempts in flight.
CLEAR = """
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(member, 1, 2) == 'f:' then
        redis.call('ZREM', KEYS[1], member)
    end
end
return 0
"""

# One typing relay per user per room per window, cluster-wide. KEYS[1] = the
# user's key in the room; ARGV = now (the caller's wall clock, seconds), the
# window, a keep-alive in ms. Returns the wait in seconds as a string (0 =
# relay now; the window starts).
CLAIM_RELAY = """
local now = tonumber(ARGV[1])
local every = tonumber(ARGV[2])
local last = tonumber(redis.call('GET', KEYS[1]))
if last and now < last + every and now >= last then
    return tostring(last + every - now)
end
redis.call('SET', KEYS[1], tostring(now), 'PX', tonumber(ARGV[3]))
return '0'
"""


class SharedLimits:
    """One Redis connection pool for every shared limit of a node, and its scripts."""

    def __init__(self, url: str, prefix: str) -> None:
        self._prefix = f"{prefix}:limit:"
        self._client = aioredis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1, socket_timeout=1
        )
        self._take = self._client.register_script(TAKE)
        self._reserve = self._client.register_script(RESERVE)
        self._settle = self._client.register_script(SETTLE)
        self._clear = self._client.register_script(CLEAR)
        self._claim_relay = self._client.register_script(CLAIM_RELAY)
        self._failing = False

    async def close(self) -> None:
        await self._client.aclose()

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run one script; None if Redis cannot be asked (then local limits only)."""
        try:
            answer = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("the shared limits are out of reach (%s); local limits only", exc)
                self._failing = True
            return None
        if self._failing:
            log.info("the shared limits are back")
            self._failing = False
        return answer

    def _key(self, kind: str, name: str, key: str) -> str:
        return f"{self._prefix}{kind}:{name}:{key}"

    async def take(self, name: str, key: str, rate: float, burst: int) -> float | None:
        """Spend one token of a shared bucket; None if allowed, else seconds to wait."""
        keys = [self._key("bucket", name, key)]
        answer = await self._ask(lambda: self._take(keys=keys, args=[rate, max(1, burst)]))
        wait = _number(answer)
        return wait if wait > 0 else None

    async def reserve(self, name: str, key: str, limit: int, window: float) -> str | float:
        """Reserve an attempt; its member (to settle it with), or the seconds to wait."""
        member = f"r:{uuid.uuid4().hex}"
        keys = [self._key("attempts", name, key)]
        args = [limit, _ms(window), member]
        answer = await self._ask(lambda: self._reserve(keys=keys, args=args))
        wait_ms = _number(answer)
        return wait_ms / 1000 if wait_ms > 0 else ("" if answer is None else member)

    async def retry_after(self, name: str, key: str, limit: int, window: float) -> float | None:
        """Seconds until ``key`` may try again (reserving nothing), or None."""
        keys = [self._key("attempts", name, key)]
        answer = await self._ask(lambda: self._reserve(keys=keys, args=[limit, _ms(window), ""]))
        wait_ms = _number(answer)
        return wait_ms / 1000 if wait_ms > 0 else None

    async def settle(self, name: str, key: str, member: str, window: float, failed: bool) -> None:
        """End a reserved attempt ("" = none was): counted as a failure, or freed."""
        if not member and not failed:
            return
        keys = [self._key("attempts", name, key)]
        args = [_ms(window), member, int(failed), f"f:{uuid.uuid4().hex}"]
        await self._ask(lambda: self._settle(keys=keys, args=args))

    async def clear(self, name: str, key: str) -> None:
        """Forget the failures of ``key`` (a password proved right)."""
        keys = [self._key("attempts", name, key)]
        await self._ask(lambda: self._clear(keys=keys, args=[]))

    async def claim_relay(self, room_id: int, user_key: str, now: float, every: float) -> float:
        """Claim the user's typing-relay window in the room: 0, or seconds until it opens."""
        keys = [self._key("typing", str(room_id), user_key)]
        args = [repr(now), repr(every), _ms(every * 4)]
        answer = await self._ask(lambda: self._claim_relay(keys=keys, args=args))
        return max(0.0, min(every, _number(answer)))


@dataclass
class Ticket:
    """One reserved attempt, in this node's window and (on a cluster) the shared one."""

    key: str
    member: str = ""


@dataclass
class Attempts:
    """An attempt limit (login failures, registrations): this node's window, then the cluster's.

    The local window is checked and reserved first; the shared one reserves
    atomically in Redis. The limit and window are read from the local window,
    so a SIGHUP that changes them changes both layers.
    """

    name: str
    local: AttemptWindow
    shared: SharedLimits | None = None

    async def reserve(self, key: str) -> Ticket | float:
        """Reserve an attempt (a ``Ticket``), or the seconds to wait before one."""
        wait = self.local.retry_after(key)
        if wait is not None:
            return wait
        self.local.reserve(key)
        ticket = Ticket(key)
        if self.shared is None or self.local.limit <= 0:
            return ticket
        reserved = await self.shared.reserve(self.name, key, self.local.limit, self.local.window)
        if isinstance(reserved, float):
            self.local.settle(key, failed=False)
            return reserved
        ticket.member = reserved
        return ticket

    async def settle(self, ticket: Ticket, *, failed: bool) -> None:
        self.local.settle(ticket.key, failed=failed)
        if self.shared is not None and self.local.limit > 0:
            await self.shared.settle(
                self.name, ticket.key, ticket.member, self.local.window, failed
            )

    async def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, reserving nothing (a resume's check)."""
        wait = self.local.retry_after(key)
        if wait is not None or self.shared is None or self.local.limit <= 0:
            return wait
        return await self.shared.retry_after(self.name, key, self.local.limit, self.local.window)

    async def record(self, key: str) -> None:
        """Count one failure that was not reserved (a wrong resume token)."""
        self.local.record(key)
        if self.shared is not None and self.local.limit > 0:
            await self.shared.settle(self.name, key, "", self.local.window, True)

    async def clear(self, key: str) -> None:
        self.local.clear(key)
        if self.shared is not None:
            await self.shared.clear(self.name, key)


@dataclass
class Bucket:
    """A rate (room joins and creations, message changes): this node's bucket, then the
    cluster's, with the same rate and burst."""

    name: str
    local: TokenBucket
    shared: SharedLimits | None = field(default=None)

    async def take(self, key: str) -> float | None:
        """Spend one token; None if allowed, else seconds until one is free."""
        wait = self.local.take(key)
        if wait is not None or self.shared is None or self.local.rate <= 0:
            return wait
        return await self.shared.take(self.name, key, self.local.rate, self.local.burst)


def _number(answer: object) -> float:
    try:
        return float(answer) if answer is not None else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))

"""Limits shared by every node of a cluster, kept in Redis.

A per-user limit kept in each node's memory is multiplied by the number of
nodes a client connects to. ``SharedTokenBucket`` keeps the bucket in Redis
instead: one Lua script refills and spends atomically, on Redis's own clock
(``TIME``), so nodes need no synchronised clocks and two nodes can never
spend the same token. Each node still applies its local bucket first (it
costs nothing and holds while Redis is away); when Redis cannot be asked,
the shared check is skipped rather than refusing to chat — a client then
gets at most one local budget per node until Redis is back.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

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


class SharedTokenBucket:
    """A per-key token bucket in Redis: ``rate`` per second, bursts of ``burst``; 0 = off."""

    def __init__(self, url: str, prefix: str, name: str, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._prefix = f"{prefix}:limit:{name}:"
        self._client = aioredis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1, socket_timeout=1
        )
        self._script = self._client.register_script(TAKE)
        self._failing = False

    async def take(self, key: str) -> float | None:
        """Spend one token of ``key`` cluster-wide; None if allowed, else seconds to wait."""
        if self.rate <= 0:
            return None
        try:
            answer = await self._script(keys=[self._prefix + key], args=[self.rate, self.burst])
            wait = float(answer)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            if not self._failing:
                log.warning("the shared rate limit is out of reach (%s); local limits only", exc)
                self._failing = True
            return None
        self._failing = False
        return wait if wait > 0 else None

    async def close(self) -> None:
        await self._client.aclose()

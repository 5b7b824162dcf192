"""The test harness leaves the shared Redis as it found it."""

from __future__ import annotations

import redis

from tests.cluster.harness import bus_prefix, forget_prefixes
from tests.services import redis_url


def test_forget_prefixes_deletes_only_the_keys_of_issued_prefixes() -> None:
    url = redis_url()
    client = redis.Redis.from_url(url)
    outsider = f"not-{bus_prefix()}:kept"  # a key that merely contains a prefix
    prefix = bus_prefix()
    try:
        client.set(f"{prefix}:limit:bucket:room:ann", 1, ex=60)
        client.set(f"{prefix}:limit:attempts:register-total:", 1, ex=60)
        client.set(outsider, 1, ex=60)

        assert forget_prefixes(url) == 2

        assert client.keys(f"{prefix}:*") == []
        assert client.exists(outsider) == 1
        assert forget_prefixes(url) == 0  # nothing issued since
    finally:
        client.delete(outsider)
        client.close()

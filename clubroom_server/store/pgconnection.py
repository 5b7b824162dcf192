"""The connection class of every PostgreSQL pool: no reset round trip when one goes back.

asyncpg resets every connection a pool takes back with one more statement
(``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): a
second round trip after *every* use, so a one-statement read or a commit
cost two. On a cluster node at 10,000 deliveries/s that reset was about 5 %
of the node's CPU (py-spy), and as much work again for PostgreSQL.

Clubroom leaves no session state on a connection: it never ``SET``s a
parameter (a pool's settings are connection start-up parameters, which the
session keeps), never ``LISTEN``s, keeps no cursor open across uses, and
unlocks its one advisory lock (migrations) in a ``finally``. asyncpg still
rolls back a transaction left open, whatever the reset query is.
"""

from __future__ import annotations

import asyncpg


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose return to its pool costs no statement."""

    def get_reset_query(self) -> str:
        return ""

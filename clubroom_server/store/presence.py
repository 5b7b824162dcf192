"""Cluster presence in PostgreSQL: memberships per node, node leases, the last-leave decision.

One process keeps presence in memory (``rooms.py``). A cluster cannot: a
user may be in a room through connections on two nodes, and "the last member
left, delete the room" must never fire while someone on another node is
inside. So every node records, per room, which users it holds (one row per
room, user and node), and every decision that depends on the whole room runs
in ONE transaction that first locks the room's row (``SELECT … FOR UPDATE``):

* a join locks it, then inserts its row: it cannot interleave with a last
  leave, and finds the room gone if a last leave won;
* a leave locks it, deletes its row, and deletes the room (messages cascade)
  only if no row is left.

Nodes hold a lease (``cluster_nodes``), renewed every few seconds. A node
that stops renewing is treated as if all its connections dropped at the
moment its lease ran out: after the grace period its rows are removed by
whichever node reaps first, with the same last-leave rule. A node restarted
with the same id first puts its old rows in grace, so stale presence is not
resurrected. Times are the database's clock, so nodes need no synchronised
clocks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from clubroom_server.store.factory import describe_url
from clubroom_server.store.interface import StartupError, StoreError, UnavailableError
from clubroom_server.store.pgconnection import PooledConnection
from clubroom_server.store.records import RoomRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
# A room's presence changes are serialised by the lock on its row; the time
# (µs) each takes under that lock orders them: a joiner's member list is as of
# its version, and a member event with a later version is news to it.
VERSION = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 15.0

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.ReadOnlySQLTransactionError,
)
# Two transactions that lock the same rows in different orders (a join
# holding its lease row then its room, a reap locking rooms, a node forgotten
# while its rows are read) may deadlock; PostgreSQL aborts one, which is
# rolled back whole and simply runs again.
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
TRANSACTION_RETRIES = 3

# Rows whose time is up: a row in grace whose grace ran out, or a held row
# whose node's lease ran out more than a grace period ago (or is unknown).
_EXPIRED = f"""
    (p.grace_until_ms IS NOT NULL AND p.grace_until_ms < {NOW_MS})
    OR (p.grace_until_ms IS NULL AND NOT EXISTS (
        SELECT 1 FROM cluster_nodes n
        WHERE n.id = p.node_id AND n.lease_until_ms + $1 >= {NOW_MS}
    ))
"""


class NodeLapsed(UnavailableError):
    """This node's lease has expired: it may not record presence until it has fenced."""


@dataclass(frozen=True, slots=True)
class Joined:
    """A join's outcome: whether the user is new to the room cluster-wide, and who is in it."""

    new_member: bool
    members: list[str]
    version: int = 0  # when, under the room's lock, the list was read


@dataclass(frozen=True, slots=True)
class Left:
    """A leave's outcome: whether the user left the room cluster-wide, and if the room went."""

    user_left: bool
    room_deleted: bool
    version: int = 0


@dataclass(frozen=True, slots=True)
class Reaped:
    """Expired memberships removed from one room."""

    room_id: int
    room_name: str
    left: list[str]  # usernames that are no longer in the room anywhere
    room_deleted: bool
    version: int = 0


class ClusterPresence:
    """Presence rows and node leases on the cluster's PostgreSQL database."""

    def __init__(self, url: str, node_id: str, pool_size: int = 3) -> None:
        self.url = url
        self.node_id = node_id
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._lease = 0.0  # seconds; set by ``register``

    async def open(self) -> None:
        """Connect (the schema is the store's: it migrates before this opens)."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                connection_class=PooledConnection,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StartupError(
                f"Cluster presence cannot reach {describe_url(self.url)}: {type(exc).__name__}"
            ) from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One transaction; the database being away becomes ``UnavailableError``."""
        if self._pool is None:
            raise UnavailableError("cluster presence is not open")
        try:
            return await self._attempt(work)
        except _UNAVAILABLE as exc:
            raise UnavailableError(f"cluster presence: {type(exc).__name__}") from None
        except asyncpg.exceptions.ObjectNotInPrerequisiteStateError as exc:
            # e.g. "database is not currently accepting connections"
            raise UnavailableError(f"cluster presence: {type(exc).__name__}") from None
        except asyncpg.PostgresError as exc:
            raise StoreError(f"cluster presence: {type(exc).__name__}") from None

    async def _attempt(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction, again if PostgreSQL aborted it as a deadlock victim."""
        assert self._pool is not None
        for attempt in range(TRANSACTION_RETRIES + 1):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await work(conn)
            except _RETRYABLE as exc:
                if attempt == TRANSACTION_RETRIES:
                    raise
                log.info("cluster presence: %s, retrying", type(exc).__name__)
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- leases

    async def register(self, lease: float, grace: float) -> None:
        """Take this node's lease; rows left by an earlier life of this id start their grace."""

        self._lease = lease

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                f"INSERT INTO cluster_nodes (id, lease_until_ms) VALUES ($1, {NOW_MS} + $2) "
                "ON CONFLICT (id) DO UPDATE SET lease_until_ms = EXCLUDED.lease_until_ms",
                self.node_id,
                _ms(lease),
            )
            if await _start_grace(conn, self.node_id, grace):
                log.info("an earlier run of node %s left presence; it gets one grace", self.node_id)

        await self._run(work)

    async def renew(self, lease: float, grace: float) -> bool:
        """Extend this node's lease (every few seconds); True if it had lapsed meanwhile.

        Lapsed means lease + grace ran out before this renewal (the node was
        frozen, or starved of CPU or of the database): any other node may
        have reaped this node's memberships and deleted rooms its clients are
        still in, so the caller must treat its clients as gone (fence).
        """

        async def work(conn: asyncpg.Connection) -> bool:
            lapsed = await conn.fetchval(
                f"SELECT lease_until_ms + $2 < {NOW_MS} FROM cluster_nodes WHERE id = $1 "
                "FOR UPDATE",
                self.node_id,
                _ms(grace),
            )
            await conn.execute(
                f"INSERT INTO cluster_nodes (id, lease_until_ms) VALUES ($1, {NOW_MS} + $2) "
                "ON CONFLICT (id) DO UPDATE SET lease_until_ms = EXCLUDED.lease_until_ms",
                self.node_id,
                _ms(lease),
            )
            return lapsed is None or bool(lapsed)  # no row: forgotten as dead

        return await self._run(work)

    async def retire(self, grace: float) -> None:
        """An orderly shutdown: this node's rows start their grace now, its lease ends.

        Its clients were told to reconnect; on another node they join again
        within the grace and nobody sees them leave.
        """

        async def work(conn: asyncpg.Connection) -> None:
            await _start_grace(conn, self.node_id, grace)
            await conn.execute("DELETE FROM cluster_nodes WHERE id = $1", self.node_id)

        await self._run(work)

    # ---------------------------------------------------------- memberships

    async def join(self, room_id: int, user_key: str, username: str) -> Joined | None:
        """Record that this node holds the user in the room; None if the room is gone.

        Only while this node's lease is valid (``NodeLapsed`` otherwise): a
        row written by a node the others consider dead could be reaped, and
        its room deleted, the moment after the joiner was told ``joined``.
        """

        async def work(conn: asyncpg.Connection) -> Joined | None:
            await _hold_lease(conn, self.node_id, _ms(self._lease))
            if await _lock_room(conn, room_id) is None:
                return None
            others = await conn.fetchval(
                "SELECT count(*) FROM presence WHERE room_id = $1 AND user_key = $2 "
                "AND node_id <> $3",
                room_id,
                user_key,
                self.node_id,
            )
            mine = await conn.fetchval(
                "INSERT INTO presence (room_id, user_key, node_id, username) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_key, node_id) "
                "DO UPDATE SET grace_until_ms = NULL "
                "RETURNING (xmax = 0)",
                room_id,
                user_key,
                self.node_id,
                username,
            )
            members = await _members(conn, room_id)
            return Joined(bool(mine) and others == 0, members, await conn.fetchval(VERSION))

        return await self._run(work)

    async def leave(self, room_id: int, user_key: str) -> Left:
        """This node no longer holds the user in the room: maybe they left, maybe the room goes."""

        async def work(conn: asyncpg.Connection) -> Left:
            if await _lock_room(conn, room_id) is None:
                return Left(user_left=False, room_deleted=False)
            status = await conn.execute(
                "DELETE FROM presence WHERE room_id = $1 AND user_key = $2 AND node_id = $3",
                room_id,
                user_key,
                self.node_id,
            )
            still_in = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM presence WHERE room_id = $1 AND user_key = $2)",
                room_id,
                user_key,
            )
            # Leaving twice (a kick racing a join undoes the join) is announced once.
            removed = status != "DELETE 0"
            deleted = await _delete_if_empty(conn, room_id)
            return Left(removed and not still_in, deleted, await conn.fetchval(VERSION))

        return await self._run(work)

    async def room_by_key(self, key: str) -> RoomRecord | None:
        """A stored room by its case-folded name (a room another node created)."""

        async def work(conn: asyncpg.Connection) -> RoomRecord | None:
            row = await conn.fetchrow(
                "SELECT id, name, key, created_ms, last_seq FROM rooms WHERE key = $1", key
            )
            return None if row is None else RoomRecord(*row)

        return await self._run(work)

    async def members(self, room_id: int) -> list[str]:
        """Who is in the room anywhere in the cluster (in grace included), by username."""

        async def work(conn: asyncpg.Connection) -> list[str]:
            return await _members(conn, room_id)

        return await self._run(work)

    async def is_present(self, room_id: int, user_key: str) -> bool:
        """Does any node hold the user in the room (in grace included)?"""

        async def work(conn: asyncpg.Connection) -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM presence WHERE room_id = $1 AND user_key = $2)",
                    room_id,
                    user_key,
                )
            )

        return await self._run(work)

    async def delete_if_unjoined(self, room_id: int) -> bool:
        """Delete a room nobody holds (e.g. its creator's join failed); True if it went."""

        async def work(conn: asyncpg.Connection) -> bool:
            if await _lock_room(conn, room_id) is None:
                return False
            return await _delete_if_empty(conn, room_id)

        return await self._run(work)

    # ---------------------------------------------------------------- reaping

    async def reap(self, grace: float) -> list[Reaped]:
        """Remove memberships whose grace or node lease ran out, room by room, last-leave rule.

        Any node may run this at any time; rooms are locked one at a time, so
        two nodes reaping at once simply find nothing left to do.
        """
        grace_ms = _ms(grace)

        async def candidates(conn: asyncpg.Connection) -> list[int]:
            rows = await conn.fetch(
                f"SELECT DISTINCT p.room_id FROM presence p WHERE {_EXPIRED}", grace_ms
            )
            return sorted(row["room_id"] for row in rows)

        reaped = []
        for room_id in await self._run(candidates):
            outcome = await self._run(lambda conn, r=room_id: _reap_room(conn, r, grace_ms))
            if outcome is not None:
                reaped.append(outcome)
        await self._run(lambda conn: _forget_dead_nodes(conn, grace_ms))
        return reaped

    async def reap_unjoined_rooms(self, older_than: float) -> list[int]:
        """Delete rooms no one has held for ``older_than`` seconds (e.g. after a full restart)."""

        async def work(conn: asyncpg.Connection) -> list[int]:
            rows = await conn.fetch(
                "SELECT id FROM rooms r WHERE created_ms < "
                f"{NOW_MS} - $1 AND NOT EXISTS (SELECT 1 FROM presence p WHERE p.room_id = r.id) "
                "ORDER BY id",
                _ms(older_than),
            )
            deleted = []
            for row in rows:
                locked = await _lock_room(conn, row["id"]) is not None
                if locked and await _delete_if_empty(conn, row["id"]):
                    deleted.append(row["id"])
            return deleted

        return await self._run(work)


async def _hold_lease(conn: asyncpg.Connection, node_id: str, lease_ms: int) -> None:
    """Make sure this node's lease outlives the transaction by a good margin, or refuse.

    A lease still valid but past half its time is renewed here (rarely: the
    lease loop renews every third), so a loaded node's joins do not fail
    for a renewal that is merely late. A lease already expired is not
    renewed: the lease loop must notice the lapse and fence first.
    """
    left = await conn.fetchval(
        f"SELECT lease_until_ms - {NOW_MS} FROM cluster_nodes WHERE id = $1", node_id
    )
    if left is None or left <= 0:
        raise NodeLapsed(node_id)
    if left < lease_ms // 2:
        await conn.execute(
            f"UPDATE cluster_nodes SET lease_until_ms = {NOW_MS} + $2 WHERE id = $1",
            node_id,
            lease_ms,
        )


async def _start_grace(conn: asyncpg.Connection, node_id: str, grace: float) -> bool:
    """Every row the node holds becomes a dropped connection in grace; True if any did."""
    status = await conn.execute(
        f"UPDATE presence SET grace_until_ms = {NOW_MS} + $2 "
        "WHERE node_id = $1 AND grace_until_ms IS NULL",
        node_id,
        _ms(grace),
    )
    return status != "UPDATE 0"


async def _lock_room(conn: asyncpg.Connection, room_id: int) -> str | None:
    """Lock the room's row for this transaction; its name, or None if it is not stored."""
    name = await conn.fetchval("SELECT name FROM rooms WHERE id = $1 FOR UPDATE", room_id)
    return None if name is None else str(name)


async def _members(conn: asyncpg.Connection, room_id: int) -> list[str]:
    """Each member once, in alphabetical order (as one process lists them)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (user_key) user_key, username FROM presence WHERE room_id = $1 "
        "ORDER BY user_key",
        room_id,
    )
    return sorted((row["username"] for row in rows), key=str.casefold)


async def _delete_if_empty(conn: asyncpg.Connection, room_id: int) -> bool:
    """The last-leave rule, inside a transaction that holds the room's lock."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM presence WHERE room_id = $1)", room_id):
        return False
    await conn.execute("DELETE FROM messages WHERE room_id = $1", room_id)
    await conn.execute("DELETE FROM rooms WHERE id = $1", room_id)
    return True


async def _reap_room(conn: asyncpg.Connection, room_id: int, grace_ms: int) -> Reaped | None:
    name = await _lock_room(conn, room_id)
    if name is None:
        return None
    gone = await conn.fetch(
        f"DELETE FROM presence p WHERE p.room_id = $2 AND ({_EXPIRED}) "
        "RETURNING p.user_key, p.username",
        grace_ms,
        room_id,
    )
    if not gone:
        return None
    left: dict[str, str] = {}
    for row in gone:
        still_in = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM presence WHERE room_id = $1 AND user_key = $2)",
            room_id,
            row["user_key"],
        )
        if not still_in:
            left[row["user_key"]] = row["username"]
    deleted = await _delete_if_empty(conn, room_id)
    version = await conn.fetchval(VERSION)
    return Reaped(room_id, name, [left[key] for key in sorted(left)], deleted, version)


async def _forget_dead_nodes(conn: asyncpg.Connection, grace_ms: int) -> None:
    await conn.execute(
        f"DELETE FROM cluster_nodes n WHERE n.lease_until_ms + $1 < {NOW_MS} "
        "AND NOT EXISTS (SELECT 1 FROM presence p WHERE p.node_id = n.id)",
        grace_ms,
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)

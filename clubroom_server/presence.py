"""A cluster node's side of presence: its memberships in the database, its lease, the reaper.

One process never uses this (``rooms.py`` is the whole truth there). A
cluster node keeps its own connections in ``rooms.py`` and records, through
``store.presence.ClusterPresence``, which users it holds in which room; the
database decides who is new, who left and when a room is empty (see there).

What this module adds on top of the SQL:

* operations on one (room, user) run one after another on this node, so a
  quick leave-then-rejoin can never delete the row the rejoin just wrote;
* a leave is retried until the database takes it (a row left behind would
  keep an empty room alive for ever);
* every few seconds: renew the lease, and reap memberships whose grace or
  node lease ran out (any node may, each room under its lock); rooms that no
  one holds are deleted once they are old enough to be orphans;
* a node that cannot renew its lease for a whole lease period is *fenced*:
  the others will soon treat its members as gone, so it closes its clients
  (they reconnect, maybe to another node) instead of serving a stale view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from clubroom_server.metrics import ROOMS_DELETED_BY_CLEANUP
from clubroom_server.store import RoomRecord, StoreError
from clubroom_server.store.presence import ClusterPresence, Joined

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_FIRST = 0.2  # seconds before a failed leave is tried again
RETRY_MAX = 5.0
LEAVES_AT_CLOSE = 5.0  # seconds shutdown waits for leaves in flight (the rest get a grace)
ORPHAN_AGE = 60.0  # seconds a room nobody holds may exist (its creator's join in flight)

# (room id, room name, usernames that left the room cluster-wide, presence version)
OnLeft = Callable[[int, str, list[str], int], None]


class ClusterMembers:
    """This node's memberships in the shared database, kept exact through failures."""

    def __init__(
        self,
        db: ClusterPresence,
        grace: float,
        lease: float,
        on_left: OnLeft,
        on_fenced: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self.grace = grace
        self.lease = lease
        self._on_left = on_left
        self._on_fenced = on_fenced
        self._locks: dict[tuple[int, str], _Shared] = {}
        self._leaves: set[asyncio.Task[None]] = set()
        self._pending: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._last_renewed = 0.0
        self._fenced = False

    @property
    def healthy(self) -> bool:
        """The lease was renewed within the last lease period."""
        return not self._fenced and self._now() - self._last_renewed < self.lease

    async def start(self) -> None:
        """Connect, take the lease (old rows of this id enter grace), start the loop."""
        await self._db.open()
        try:
            await self._db.register(self.lease, self.grace)
        except BaseException:
            await self._db.close()
            raise
        self._last_renewed = self._now()
        self._loop_tasks = [
            asyncio.create_task(self._keep_lease(), name="presence-lease"),
            asyncio.create_task(self._keep_reaping(), name="presence-reaper"),
        ]

    async def close(self) -> None:
        """Stop the loop, finish leaves in flight, hand the remaining rows to the grace."""
        self._stop.set()
        await asyncio.gather(*self._loop_tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LEAVES_AT_CLOSE):
                await self._finish_leaves()
        with contextlib.suppress(StoreError):
            await self._db.retire(self.grace)
        await self._db.close()

    # ---------------------------------------------------------- memberships

    async def join(self, room_id: int, user_key: str, username: str) -> Joined | None:
        """Record the user in the room through this node (None: the room is gone)."""
        async with self._lock(room_id, user_key):
            return await self._db.join(room_id, user_key, username)

    async def member_count(self, room_id: int) -> int:
        """Members of a room on every node (what an admin's room list shows)."""
        return len(await self._db.members(room_id))

    async def is_present(self, room_id: int, user_key: str) -> bool:
        """Is the user in the room through any node (a member joining elsewhere included)?"""
        return await self._db.is_present(room_id, user_key)

    async def find_room(self, key: str) -> RoomRecord | None:
        """A stored room by key (``room_by_key``), for a join on a node that does not serve it."""
        return await self._db.room_by_key(key)

    def leave(self, room_id: int, room_name: str, user_key: str, username: str) -> None:
        """The user has no connection (or grace) left here: remove the row, retrying."""
        task = asyncio.create_task(self._leave(room_id, room_name, user_key, username))
        self._leaves.add(task)
        task.add_done_callback(self._leaves.discard)
        key = (room_id, user_key)
        self._pending[key] = task
        task.add_done_callback(lambda done: self._settle(key, done))

    def _settle(self, key: tuple[int, str], task: asyncio.Task[None]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]

    async def settled(self, room_id: int, user_key: str) -> None:
        """Wait until this node's leave of the user from the room (if any) is recorded.

        An explicit ``leave_room`` answers only then, so that "the last member
        left, the name is free" holds by the time the client hears ``ok``.
        """
        task = self._pending.get((room_id, user_key))
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _leave(self, room_id: int, room_name: str, user_key: str, username: str) -> None:
        wait = RETRY_FIRST
        async with self._lock(room_id, user_key):
            while True:
                try:
                    left = await self._db.leave(room_id, user_key)
                    break
                except StoreError as exc:
                    if self._stop.is_set():
                        return  # retire() hands the row to the grace
                    log.warning("recording a leave failed (%s); retrying", exc)
                    await self._sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)
        if left.room_deleted:
            ROOMS_DELETED_BY_CLEANUP.inc()
            log.info("room %r is empty cluster-wide; deleted it and its messages", room_name)
        if left.user_left and not left.room_deleted:
            self._tell_left(room_id, room_name, [username], left.version)

    def _tell_left(self, room_id: int, room_name: str, usernames: list[str], version: int) -> None:
        try:
            self._on_left(room_id, room_name, usernames, version)
        except Exception:
            log.exception("announcing a departure failed")

    def _lock(self, room_id: int, user_key: str) -> _KeyLock:
        return _KeyLock(self._locks, (room_id, user_key))

    async def _finish_leaves(self) -> None:
        while self._leaves:
            await asyncio.gather(*list(self._leaves), return_exceptions=True)

    # ------------------------------------------------------ lease and reaper

    async def _keep_lease(self) -> None:
        """Renew the lease every third of it, until stopped.

        A loop of its own: reaping waits for room locks and may be slow on a
        loaded database, and a renewal stuck behind it could let the lease
        lapse on a perfectly healthy node.
        """
        while not self._stop.is_set():
            try:
                await self._renew()
            except Exception:  # this loop must outlive any surprise, or the node dies silently
                log.exception("renewing the cluster lease failed; trying again")
            await self._sleep(self.lease / 3)

    async def _keep_reaping(self) -> None:
        """Reap expired memberships every third of a lease (unjoined rooms every tenth time)."""
        rounds = 0
        while not self._stop.is_set():
            try:
                # Only with a fresh lease of our own: a node just back from an outage
                # would otherwise reap its own members before its renewal says so.
                if self.healthy:
                    await self._reap(orphans=rounds % 10 == 0)
            except Exception:
                log.exception("reaping cluster presence failed; trying again")
            rounds += 1
            await self._sleep(self.lease / 3)

    async def _renew(self) -> None:
        try:
            lapsed = await self._db.renew(self.lease, self.grace)
        except StoreError as exc:
            if self._now() - self._last_renewed >= self.lease and not self._fenced:
                self._fenced = True
                log.error("lost the cluster lease (%s); closing this node's clients", exc)
                self._on_fenced()
            return
        self._last_renewed = self._now()
        if self._fenced:
            log.info("the cluster lease is back; serving again")
            self._fenced = False
        elif lapsed:
            # Frozen or starved past lease + grace: the other nodes may have
            # dropped our members and deleted their rooms. Our clients must
            # reconnect and join again rather than linger as ghosts.
            log.error("the cluster lease had lapsed (node frozen?); closing this node's clients")
            self._on_fenced()

    async def _reap(self, orphans: bool) -> None:
        try:
            for reaped in await self._db.reap(self.grace):
                if reaped.room_deleted:
                    ROOMS_DELETED_BY_CLEANUP.inc()
                    log.info("room %r lost its last member; deleted it", reaped.room_name)
                elif reaped.left:
                    self._tell_left(reaped.room_id, reaped.room_name, reaped.left, reaped.version)
            if orphans:
                await self._db.reap_unjoined_rooms(max(ORPHAN_AGE, self.grace))
        except StoreError as exc:
            log.debug("reaping presence failed: %s", exc)

    async def _sleep(self, seconds: float) -> None:
        """Wait, but wake at once when stopping (no cancelled wait_for)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


class _Shared:
    """A lock and how many operations hold it or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _KeyLock:
    """A lock per key, dropped from the table when no operation holds or waits for it."""

    def __init__(self, table: dict[tuple[int, str], _Shared], key: tuple[int, str]) -> None:
        self._table = table
        self._key = key

    async def __aenter__(self) -> None:
        self._shared = self._table.setdefault(self._key, _Shared())
        self._shared.users += 1
        try:
            await self._shared.lock.acquire()
        except BaseException:
            self._done()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._shared.lock.release()
        self._done()

    def _done(self) -> None:
        self._shared.users -= 1
        if self._shared.users == 0:
            del self._table[self._key]

"""The PostgreSQL backend (asyncpg): for deployments that outgrow one machine.

Reads take a connection from a pool. Writes are group-committed like
SQLite's: one writer task takes everything queued while the previous batch
was in flight and commits it in one transaction, and consecutive appends in a
batch become ONE statement (``unnest`` of arrays) that locks the rooms' rows
in id order, numbers the messages from each room's ``last_seq``, advances it,
and inserts them, ids coming from the table's identity in that order. So a
batch of any size costs one round trip and one WAL flush, and per room the
id, the ``seq`` and the commit order agree even with several servers writing.

When the database goes away, calls raise ``UnavailableError`` (nothing of the
failed call was acknowledged); the pool reconnects by itself on the next call
once the database is back.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import asyncpg

from clubroom_server.store import migrations, postgres_search
from clubroom_server.store.batch import Refused, by_type, fail_all, settle
from clubroom_server.store.changes import (
    MAX_REACTIONS_PER_MESSAGE,
    NOT_FOUND,
    TOO_MANY_REACTIONS,
    ChangeKind,
    ChangeRecord,
    ChangeRefused,
    MessageChange,
    ReactionCount,
    SearchHit,
    change_row,
    counted,
    refusal,
)
from clubroom_server.store.factory import describe_url
from clubroom_server.store.interface import (
    DEFAULT_SEARCH_TIMEOUT,
    DuplicateError,
    NotFoundError,
    OnStored,
    PoolUsage,
    SchemaError,
    SearchTooSlow,
    StartupError,
    StoreError,
    UnavailableError,
)
from clubroom_server.store.pacing import CommitPacer
from clubroom_server.store.pgconnection import PooledConnection
from clubroom_server.store.records import (
    TABLE_OF,
    TABLES,
    DumpBatch,
    HighWater,
    MessageRecord,
    RoomRecord,
    UserRecord,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS = migrations.scripts("postgres")
CONNECT_TIMEOUT = 10.0  # seconds to establish a connection
COMMAND_TIMEOUT = 30.0  # seconds any one statement may take
CLOSE_TIMEOUT = 10.0  # seconds to close the pool gracefully before terminating it
BATCH_RETRIES = 3  # a deadlock or serialization failure retries the batch this often
MIGRATION_LOCK = 0x436C7562  # advisory lock: one node migrates at a time

MESSAGE_COLUMNS = ", ".join(TABLE_OF[MessageRecord].columns)
USER_COLUMNS = ", ".join(TABLE_OF[UserRecord].columns)
ROOM_COLUMNS = ", ".join(TABLE_OF[RoomRecord].columns)

# One statement appends a whole run of messages: lock the rooms in id order,
# number the messages after each room's last_seq, advance it, insert them in
# input order (so identity ids follow seq within each room). Messages for a
# room that is not stored are dropped by the join: the caller sees them
# missing from RETURNING and answers NotFoundError.
APPEND_MANY = """
WITH input AS (
    SELECT * FROM unnest(
        $1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[],
        $7::bigint[]
    ) WITH ORDINALITY AS i(room_id, author_id, author, text, at_ms, nonce, reply_to, ord)
), locked AS (
    SELECT id, last_seq FROM rooms
    WHERE id IN (SELECT room_id FROM input)
    ORDER BY id
    FOR UPDATE
), numbered AS (
    SELECT i.*, l.last_seq + row_number() OVER (PARTITION BY i.room_id ORDER BY i.ord) AS seq
    FROM input i JOIN locked l ON l.id = i.room_id
), bumped AS (
    UPDATE rooms SET last_seq = top.seq
    FROM (SELECT room_id, max(seq) AS seq FROM numbered GROUP BY room_id) top
    WHERE rooms.id = top.room_id
)
INSERT INTO messages (room_id, seq, author_id, author, text, at_ms, nonce, reply_to)
SELECT room_id, seq, author_id, author, text, at_ms, nonce, reply_to FROM numbered ORDER BY ord
RETURNING id, room_id, seq
"""

# Move a table's identity past ``$2`` unless it already is (never backwards).
RAISE_SEQUENCE = """
SELECT setval(pg_get_serial_sequence($1, 'id'), $2)
WHERE $2 > COALESCE(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')), 0)
"""

# What the database going away looks like, as opposed to a refused statement.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.ReadOnlySQLTransactionError,  # a failover left us on a standby
)
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

ConnOp = Callable[[asyncpg.Connection], Awaitable[Any]]

REACTION_COUNTS = (
    "SELECT message_id, emoji, COUNT(*), bool_or(user_id = $1) FROM reactions "
    "WHERE message_id = ANY($2::bigint[]) GROUP BY message_id, emoji ORDER BY message_id, MIN(id)"
)
MESSAGE_FIELDS = len(TABLE_OF[MessageRecord].columns)
# Searches run on connections of their own, which plan every query for the
# words searched. After five runs PostgreSQL may switch a prepared statement
# to a generic plan, made without knowing the words: it then reads the GIN
# index's every match of a word found in most messages (140 ms in a room of
# 100,000) where the custom plan walks the room backwards and stops at the
# page (2 ms), and the reverse for a rare word. (``SET LOCAL`` in a
# transaction around each search did the same at three more round trips.)
# Their own pool also keeps a burst of searches from taking the connections
# that sends and history need; and their statement_timeout (the store's
# ``search_timeout``) stops a search that would hold one for long.
SEARCH_SETTINGS = {"application_name": "clubroom-search", "plan_cache_mode": "force_custom_plan"}


def search_settings(timeout: float) -> dict[str, str]:
    """The search connections' settings: SEARCH_SETTINGS and the timeout in whole ms (≥ 1)."""
    return {**SEARCH_SETTINGS, "statement_timeout": str(max(1, round(timeout * 1000)))}


class _Append(NamedTuple):
    room_id: int
    author_id: int
    author: str
    text: str
    at_ms: int
    nonce: str | None
    reply_to: int | None = None


class _Write(NamedTuple):
    work: _Append | ConnOp
    future: asyncio.Future[Any]
    on_stored: Callable[[Any], None] | None


class PostgresStore:
    """The ``Store`` interface on a PostgreSQL database, through an asyncpg pool."""

    def __init__(
        self,
        url: str,
        pool_size: int = 10,
        commit_interval: float = 0.0,
        search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
    ) -> None:
        self.url = url
        self._pool_size = max(2, pool_size)
        self._search_timeout = search_timeout
        self._pool: asyncpg.Pool | None = None
        self._search_pool: asyncpg.Pool | None = None
        self._queue: list[_Write] = []
        self._wakeup = asyncio.Event()
        self._pacer = CommitPacer(commit_interval)
        self._closing = False
        self._write_task: asyncio.Task[None] | None = None
        self._unavailable_logged = False

    @property
    def description(self) -> str:
        return describe_url(self.url)

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Connect (one-sentence ``StartupError`` if that fails), migrate, start the writer."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                connection_class=PooledConnection,
                min_size=0,  # no background reconnects (and their tracebacks) while down
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings={"application_name": "clubroom"},
            )
            self._search_pool = await asyncpg.create_pool(
                self.url,
                connection_class=PooledConnection,
                min_size=0,  # connects at the first search
                max_size=max(2, self._pool_size // 4),
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=search_settings(self._search_timeout),
            )
        except Exception as exc:  # every driver error becomes one sentence, no traceback
            await self._terminate()
            raise self._startup_error(exc) from None
        try:
            async with self._pool.acquire() as conn:
                await _migrate(conn, self.description)
        except StartupError:
            await self._terminate()
            raise
        except Exception as exc:
            await self._terminate()
            raise self._startup_error(exc) from None
        self._write_task = asyncio.create_task(self._write_loop(), name="store-writer")

    def _startup_error(self, exc: BaseException) -> StartupError:
        """Which database, what went wrong, what to do; never the password."""
        parts = urlsplit(self.url)
        where = self.description
        user = parts.username or "the default user"
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return StartupError(f"The {where} does not exist; create it or fix --db.")
        if isinstance(exc, asyncpg.InvalidPasswordError):
            return StartupError(
                f"The {where} refused the password of user {user!r}; fix the password "
                "(in --db, PGPASSWORD or ~/.pgpass)."
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return StartupError(
                f"The {where} refused the login of user {user!r}; check the user in --db "
                "and the server's pg_hba.conf."
            )
        if isinstance(exc, TimeoutError):
            return StartupError(
                f"The {where} did not answer within {CONNECT_TIMEOUT:.0f} s; "
                "check that it is running and reachable."
            )
        if isinstance(exc, OSError):
            reason = _os_reason(exc)
            return StartupError(
                f"Cannot reach the {where} ({reason}); check that it is running and --db is right."
            )
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StartupError(f"Cannot use the {where}: {reason}.")

    async def close(self) -> None:
        """Finish every queued write, then close the pool (idempotent)."""
        self._closing = True
        self._wakeup.set()
        if self._write_task is not None:
            await self._write_task
            self._write_task = None
        for pool in (self._search_pool, self._pool):
            if pool is not None:
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await pool.close()
                except (TimeoutError, *_UNAVAILABLE):
                    pool.terminate()
        self._pool = self._search_pool = None

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    def pool_usage(self) -> PoolUsage | None:
        if self._pool is None:
            return None
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        return PoolUsage(in_use=size - idle, idle=idle, max=self._pool.get_max_size())

    async def _terminate(self) -> None:
        for pool in (self._search_pool, self._pool):
            if pool is not None:
                pool.terminate()
        self._pool = self._search_pool = None

    # ------------------------------------------------------------ write path

    def _enqueue(self, work: _Append | ConnOp, on_stored: Callable[[Any], None] | None) -> Any:
        if self._closing or self._pool is None:
            raise StoreError("the store is closing")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(work, future, on_stored))
        self._wakeup.set()
        return future

    async def _write(self, work: _Append | ConnOp, on_stored: Any = None) -> Any:
        return await self._enqueue(work, on_stored)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._queue:
                await self._pacer.wait_turn(hurry=self._closing)
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._commit(batch)
                self._pacer.finished(len(batch), bool(self._queue))
            elif self._closing:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        """Commit a batch in one transaction; if a rule refuses part of it, retry each alone."""
        for attempt in range(BATCH_RETRIES + 1):
            try:
                results = await self._run_batch(batch)
            except _RETRYABLE:
                if attempt < BATCH_RETRIES:
                    continue
                fail_all(batch, StoreError("the database kept refusing the write; retry"))
                return
            except _UNAVAILABLE as exc:
                self._note_unavailable(exc)
                fail_all(batch, UnavailableError("the database is unreachable"))
                return
            except (asyncpg.PostgresError, ValueError, OverflowError) as exc:
                if len(batch) == 1:
                    fail_all(batch, _refusal(exc))
                    return
                for write in batch:
                    await self._commit([write])
                return
            self._note_available()
            settle(batch, results)
            return

    async def _run_batch(self, batch: list[_Write]) -> list[Any]:
        assert self._pool is not None
        async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            runs = _runs(batch)
            if len(runs) == 1 and isinstance(runs[0][0].work, _Append):
                return await _append_many(conn, runs[0])  # one statement: its own transaction
            results: list[Any] = []
            async with conn.transaction():
                for run in runs:
                    if isinstance(run[0].work, _Append):
                        results += await _append_many(conn, run)
                    else:
                        results += [await write.work(conn) for write in run]  # type: ignore[operator]
            return results

    def _note_unavailable(self, exc: BaseException) -> None:
        if not self._unavailable_logged:
            log.error("the %s is unreachable (%s); answering 'unavailable'", self.description, exc)
            self._unavailable_logged = True

    def _note_available(self) -> None:
        if self._unavailable_logged:
            log.warning("the %s is reachable again", self.description)
            self._unavailable_logged = False

    # ------------------------------------------------------------- read path

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one query."""
        rows: list[asyncpg.Record] = await self._read_with(lambda conn: conn.fetch(sql, *args))
        return rows

    async def _read_with(self, op: ConnOp, search: bool = False) -> Any:
        """What ``op`` reads on a connection; ``search`` takes it from the search pool."""
        pool = self._search_pool if search else self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                result = await op(conn)
        except _UNAVAILABLE as exc:
            # statement_timeout cancels a query: an "operator intervention" too.
            if search and isinstance(exc, asyncpg.QueryCanceledError):
                raise SearchTooSlow(f"stopped after {self._search_timeout:g} s") from None
            self._note_unavailable(exc)
            raise UnavailableError("the database is unreachable") from None
        except asyncpg.PostgresError as exc:
            log.error("database read failed: %s", exc)
            raise StoreError(str(exc)) from None
        self._note_available()
        return result

    # ----------------------------------------------------------------- users

    async def add_user(
        self, username: str, key: str, password_hash: str, now_ms: int
    ) -> UserRecord:
        async def insert(conn: asyncpg.Connection) -> UserRecord:
            user_id = await conn.fetchval(
                "INSERT INTO users (username, key, password_hash, created_ms) "
                "VALUES ($1, $2, $3, $4) RETURNING id",
                username,
                key,
                password_hash,
                now_ms,
            )
            return UserRecord(user_id, username, key, password_hash, now_ms)

        return await self._write(insert)  # type: ignore[no-any-return]

    async def user_by_key(self, key: str) -> UserRecord | None:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users WHERE key = $1", key)
        return UserRecord(*rows[0]) if rows else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._write(
            _statement("UPDATE users SET password_hash = $1 WHERE id = $2", password_hash, user_id)
        )

    # ---------------------------------------------------------------- tokens

    async def add_token(self, token_hash: str, user_id: int, expires_ms: int) -> None:
        await self._write(
            _statement(
                "INSERT INTO tokens (hash, user_id, expires_ms) VALUES ($1, $2, $3)",
                token_hash,
                user_id,
                expires_ms,
            )
        )

    async def user_by_token(self, token_hash: str, now_ms: int) -> tuple[UserRecord, int] | None:
        rows = await self._fetch(
            "SELECT u.id, u.username, u.key, u.password_hash, u.created_ms, t.expires_ms, t.hash "
            "FROM tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.hash = $1 AND t.expires_ms > $2",
            token_hash,
            now_ms,
        )
        if not rows:
            return None
        *user, expires_ms, stored_hash = rows[0]
        if not hmac.compare_digest(stored_hash, token_hash):
            return None
        return UserRecord(*user), expires_ms

    async def revoke_token(self, token_hash: str) -> None:
        await self._write(_statement("DELETE FROM tokens WHERE hash = $1", token_hash))

    async def purge_expired_tokens(self, now_ms: int) -> None:
        await self._write(_statement("DELETE FROM tokens WHERE expires_ms <= $1", now_ms))

    # ----------------------------------------------------------------- rooms

    async def add_room(self, name: str, key: str, now_ms: int) -> RoomRecord:
        async def insert(conn: asyncpg.Connection) -> RoomRecord:
            room_id = await conn.fetchval(
                "INSERT INTO rooms (name, key, created_ms) VALUES ($1, $2, $3) RETURNING id",
                name,
                key,
                now_ms,
            )
            return RoomRecord(room_id, name, key, now_ms, 0)

        return await self._write(insert)  # type: ignore[no-any-return]

    async def all_rooms(self) -> list[RoomRecord]:
        rows = await self._fetch(f"SELECT {ROOM_COLUMNS} FROM rooms ORDER BY id")
        return [RoomRecord(*row) for row in rows]

    async def delete_room(self, room_id: int) -> None:
        """Delete the room; its message rows go with it (``ON DELETE CASCADE``).

        PostgreSQL marks the rows dead at once; their bytes leave the table
        files when VACUUM reuses the space (see SECURITY.md for WAL and backups).
        """
        await self._write(_statement("DELETE FROM rooms WHERE id = $1", room_id))

    # -------------------------------------------------------------- messages

    async def append_message(
        self,
        room_id: int,
        author_id: int,
        author: str,
        text: str,
        at_ms: int,
        nonce: str | None = None,
        on_stored: OnStored | None = None,
        reply_to: int | None = None,
    ) -> MessageRecord:
        append = _Append(room_id, author_id, author, text, at_ms, nonce, reply_to)
        return await self._write(append, on_stored)  # type: ignore[no-any-return]

    async def change_message(
        self, change: MessageChange, on_stored: Callable[[ChangeRecord], None] | None = None
    ) -> ChangeRecord:
        """Apply an edit, deletion or reaction in one transaction (see ``changes``).

        A deletion overwrites the text with an UPDATE; the old row version
        leaves the table files when VACUUM reuses its space (SECURITY.md).
        """
        return await self._write(lambda conn: _apply_change(conn, change), on_stored)  # type: ignore[no-any-return]

    async def last_row(self, room_id: int) -> MessageRecord | None:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 ORDER BY id DESC LIMIT 1",
            room_id,
        )
        return MessageRecord(*rows[0]) if rows else None

    async def messages_by_id(self, room_id: int, ids: Sequence[int]) -> list[MessageRecord]:
        if not ids:
            return []
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND id = ANY($2::bigint[])",
            room_id,
            list(ids),
        )
        return [MessageRecord(*row) for row in rows]

    async def reactions(
        self, message_ids: Sequence[int], user_id: int
    ) -> dict[int, list[ReactionCount]]:
        if not message_ids:
            return {}
        rows = await self._fetch(REACTION_COUNTS, user_id, list(message_ids))
        return counted([tuple(row) for row in rows])

    async def search_messages(
        self, room_id: int, phrases: Sequence[str], newest: bool, offset: int, limit: int
    ) -> tuple[list[SearchHit], bool]:
        """Messages of the room matching every phrase, newest or best (ts_rank) first.

        Each phrase (words only, ``search.parse_query``) is quoted for
        ``websearch_to_tsquery``, which never raises on any input anyway.
        How: postgres_search. Past ``search_timeout``: ``SearchTooSlow``.
        """
        query = postgres_search.Query.of(room_id, phrases)
        rows: list[MessageRecord] = await self._read_with(
            lambda conn: postgres_search.search(conn, query, newest, offset, limit + 1),
            search=True,
        )
        return [SearchHit(row) for row in rows[:limit]], len(rows) > limit

    async def message_by_nonce(
        self, room_id: int, author_id: int, nonce: str
    ) -> MessageRecord | None:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages "
            "WHERE room_id = $1 AND author_id = $2 AND nonce = $3",
            room_id,
            author_id,
            nonce,
        )
        return MessageRecord(*rows[0]) if rows else None

    async def latest_messages(self, room_id: int, limit: int) -> tuple[list[MessageRecord], bool]:
        return await self.messages_before(room_id, None, limit)

    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        # Two statements, not "$2 IS NULL OR id < $2": a prepared statement's
        # generic plan could not use that bound in the index scan.
        if before is None:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND kind = 0 "
                "ORDER BY id DESC LIMIT $2",
                room_id,
                limit + 1,
            )
        else:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages "
                "WHERE room_id = $1 AND kind = 0 AND id < $2 ORDER BY id DESC LIMIT $3",
                room_id,
                before,
                limit + 1,
            )
        more = len(rows) > limit
        return [MessageRecord(*row) for row in reversed(rows[:limit])], more

    async def messages_after(
        self, room_id: int, after: int, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND id > $2 "
            "ORDER BY id LIMIT $3",
            room_id,
            after,
            limit + 1,
        )
        return [MessageRecord(*row) for row in rows[:limit]], len(rows) > limit

    # ------------------------------------------------------- moving the data

    async def is_empty(self) -> bool:
        rows = await self._fetch(
            "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tokens) "
            "OR EXISTS (SELECT 1 FROM rooms) OR EXISTS (SELECT 1 FROM messages)"
        )
        return not rows[0][0]

    async def dump(self, batch_size: int = 1000) -> AsyncIterator[DumpBatch]:
        for table in TABLES:
            marks = [f"${n}" for n in range(1, table.key_size + 1)]
            sql, after = table.page(marks, f"${table.key_size + 1}"), table.first_key
            while rows := await self._fetch(sql, *after, batch_size):
                yield [table.record(*row) for row in rows]
                after = table.key_of(rows[-1])

    async def high_water(self) -> HighWater:
        rows = await self._fetch(
            "SELECT "
            + ", ".join(
                f"COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')), 0)"
                for table in ("users", "rooms", "messages")
            )
        )
        return HighWater(*rows[0])

    async def load(self, batch: Sequence[object]) -> None:
        async def insert(conn: asyncpg.Connection) -> None:
            await _insert_records(conn, batch)

        await self._write(insert)

    async def raise_high_water(self, marks: HighWater) -> None:
        async def raise_sequences(conn: asyncpg.Connection) -> None:
            for table, mark in (
                ("users", marks.users),
                ("rooms", marks.rooms),
                ("messages", marks.messages),
            ):
                await conn.execute(RAISE_SEQUENCE, table, mark)

        await self._write(raise_sequences)


async def _insert_records(conn: asyncpg.Connection, batch: Sequence[object]) -> None:
    """Insert dumped records with every id and seq as they were (``executemany``)."""
    for kind, records in by_type(batch).items():
        table = TABLE_OF[kind]
        marks = [f"${n}" for n in range(1, len(table.columns) + 1)]
        await conn.executemany(table.insert(marks), [table.row(r) for r in records])


async def _migrate(conn: asyncpg.Connection, where: str) -> None:
    """Apply the migrations this database has not seen, one node at a time."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        tables = {
            row[0]
            for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
        if tables and "schema_migrations" not in tables:
            raise SchemaError(
                f"The {where} is not a Clubroom database (it holds another application's "
                "tables); give Clubroom its own database (or schema) in --db."
            )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        if version > len(MIGRATIONS):
            raise SchemaError(
                f"The {where} has schema version {version}, newer than this Clubroom "
                f"understands (up to {len(MIGRATIONS)}); upgrade Clubroom or choose another --db."
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("migrating the %s to schema version %d", where, number)
            try:
                async with conn.transaction():
                    await conn.execute(script)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", number
                    )
            except (asyncpg.UndefinedFileError, asyncpg.InsufficientPrivilegeError) as exc:
                if "extension" not in str(exc):
                    raise
                raise _extension_error(where, exc) from None
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


def _extension_error(where: str, exc: asyncpg.PostgresError) -> StartupError:
    """Search needs the unaccent and btree_gin extensions: say how to get them.

    Without them searches would not fold accents as they do on SQLite, so the
    server stops rather than answering differently per backend.
    """
    reason = str(exc).splitlines()[0]
    if isinstance(exc, asyncpg.UndefinedFileError):
        fix = "install PostgreSQL's contrib modules (Debian and Ubuntu: postgresql-contrib)"
    else:
        fix = (
            "grant the Clubroom user CREATE on the database, or have a superuser run "
            "CREATE EXTENSION unaccent; CREATE EXTENSION btree_gin; in it"
        )
    return StartupError(
        f"The {where} cannot create the extensions search needs (unaccent, btree_gin): "
        f"{reason}; {fix}, then start again."
    )


def _os_reason(exc: OSError) -> str:
    """Why a connection failed, in the system's words ("Connection refused")."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return exc.strerror or str(exc) or type(exc).__name__
    return os.strerror(exc.errno)


def _statement(sql: str, *args: Any) -> ConnOp:
    async def run(conn: asyncpg.Connection) -> None:
        await conn.execute(sql, *args)

    return run


def _runs(batch: list[_Write]) -> list[list[_Write]]:
    """Consecutive appends form one run (one statement); every other write is a run alone."""
    runs: list[list[_Write]] = []
    for write in batch:
        appending = isinstance(write.work, _Append)
        if appending and runs and isinstance(runs[-1][0].work, _Append):
            runs[-1].append(write)
        else:
            runs.append([write])
    return runs


async def _append_many(conn: asyncpg.Connection, run: list[_Write]) -> list[Any]:
    """Append a run of messages in one statement; each gets its record or a refusal."""
    appends = [write.work for write in run]
    columns = list(zip(*appends, strict=True))
    rows = await conn.fetch(APPEND_MANY, *columns)
    # Per room, RETURNING rows and the run's appends are in the same (seq) order.
    stored: dict[int, list[tuple[int, int]]] = {}
    for row in sorted(rows, key=lambda r: (r["room_id"], r["seq"])):
        stored.setdefault(row["room_id"], []).append((row["id"], row["seq"]))
    for ids in stored.values():
        ids.reverse()  # pop() from the end takes the lowest seq first
    results: list[Any] = []
    for append in appends:
        assert isinstance(append, _Append)
        waiting = stored.get(append.room_id)
        if not waiting:
            results.append(Refused(NotFoundError("the room is not stored")))
            continue
        message_id, seq = waiting.pop()
        results.append(
            MessageRecord(
                message_id,
                append.room_id,
                seq,
                append.author_id,
                append.author,
                append.text,
                append.at_ms,
                append.nonce,
                reply_to=append.reply_to,
            )
        )
    return results


async def _apply_change(conn: asyncpg.Connection, change: MessageChange) -> Any:
    """Check and apply one change under the room's lock, and record it as a change row.

    Refusals are returned (not raised) before anything is written, so the
    rest of the batch still commits.
    """
    last_seq = await conn.fetchval(
        "SELECT last_seq FROM rooms WHERE id = $1 FOR UPDATE", change.room_id
    )
    row = await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 FOR UPDATE", change.message_id
    )
    target = MessageRecord(*row) if row else None
    reason = NOT_FOUND if last_seq is None else refusal(change, target)
    if reason is not None:
        return Refused(ChangeRefused(reason))
    assert target is not None
    written = await _write_change(conn, change)
    if isinstance(written, Refused):
        return written
    if not written:
        return ChangeRecord(None, target, await _reactions_of(conn, change), change)
    seq = last_seq + 1
    await conn.execute("UPDATE rooms SET last_seq = $2 WHERE id = $1", change.room_id, seq)
    row_id = await conn.fetchval(
        "INSERT INTO messages (room_id, seq, author_id, author, text, at_ms, kind, target_id) "
        "VALUES ($1, $2, $3, $4, $8, $5, $6, $7) RETURNING id",
        change.room_id,
        seq,
        change.user_id,
        change.username,
        change.at_ms,
        int(change.kind),
        change.message_id,
        change.emoji,
    )
    after = await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", change.message_id
    )
    return ChangeRecord(
        change_row(change, row_id, seq),
        MessageRecord(*after),
        await _reactions_of(conn, change),
        change,
    )


async def _write_change(conn: asyncpg.Connection, change: MessageChange) -> bool | Refused:
    """Write the change to the message (or its reactions); False if nothing changed."""
    if change.kind == ChangeKind.EDIT:
        await conn.execute(
            "UPDATE messages SET text = $2, edited_ms = $3 WHERE id = $1",
            change.message_id,
            change.text,
            change.at_ms,
        )
    elif change.kind == ChangeKind.DELETE:
        await conn.execute(
            "UPDATE messages SET text = '', deleted_ms = $2, edited_ms = NULL WHERE id = $1",
            change.message_id,
            change.at_ms,
        )
        await conn.execute("DELETE FROM reactions WHERE message_id = $1", change.message_id)
    elif change.kind == ChangeKind.REACT:
        emojis = {
            row[0]
            for row in await conn.fetch(
                "SELECT DISTINCT emoji FROM reactions WHERE message_id = $1", change.message_id
            )
        }
        if change.emoji not in emojis and len(emojis) >= MAX_REACTIONS_PER_MESSAGE:
            return Refused(ChangeRefused(TOO_MANY_REACTIONS))
        status = await conn.execute(
            "INSERT INTO reactions (message_id, user_id, emoji, at_ms) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            change.message_id,
            change.user_id,
            change.emoji,
            change.at_ms,
        )
        return status != "INSERT 0 0"
    else:
        status = await conn.execute(
            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
            change.message_id,
            change.user_id,
            change.emoji,
        )
        return status != "DELETE 0"
    return True


async def _reactions_of(conn: asyncpg.Connection, change: MessageChange) -> list[ReactionCount]:
    rows = await conn.fetch(REACTION_COUNTS, change.user_id, [change.message_id])
    return counted([tuple(row) for row in rows]).get(change.message_id, [])


def _refusal(exc: BaseException) -> StoreError:
    """A refused statement, named by the driver's exception class (never by its text)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return DuplicateError("already stored")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return NotFoundError("refers to something not stored")
    log.error("database write failed: %s", exc)
    return StoreError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

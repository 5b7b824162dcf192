"""Every line of SQL behind the admin commands, and the admin-event log servers follow.

The admin commands run in their own process, next to (or instead of) a
running server, on either backend. Each action is one transaction that
changes the data *and* records an ``admin_events`` row; every running
server polls that table (``events_after``) and applies the event to its
connections and rooms within half a second: disabled users are cut off,
deleted rooms announced. The database is therefore the only channel, and
the trust model is the database's: whoever may write it is an administrator
(the SQLite file is 0600 to the service user; PostgreSQL has its roles).

Accounts are disabled the way ``passwd -l`` locks one: a ``!`` in front of
the password hash, so no hash verifies and nothing else in the schema (or
``copy``) has to know. A deleted account keeps its row, with the hash
replaced by ``!deleted``: its messages stay in the rooms' history (the
per-room ``seq`` stays gap-free) and its name stays reserved, so nobody can
take it over and appear to have written them.

The SQL here is plain enough for both SQLite and PostgreSQL; a small adapter
per backend runs it (``?`` placeholders become ``$n`` for asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

from clubroom_server.store.factory import describe_url, is_postgres_url, sqlite_path
from clubroom_server.store.interface import StartupError, StoreError, UnavailableError
from clubroom_server.store.migrations import scripts
from clubroom_server.store.pgconnection import PooledConnection

ADMIN_SCHEMA = 3
"""The first schema version with ``admins`` and ``admin_events``."""
DISABLED_MARK = "!"
DELETED_HASH = "!deleted"
EVENT_RETENTION_MS = 24 * 3600 * 1000  # older admin events are pruned when a new one is written
TABLES = ("users", "tokens", "rooms", "messages", "admins")


class EventKind(StrEnum):
    """What a running server must do about an admin action."""

    USER_DISABLED = "user_disabled"  # close the user's connections
    USER_DELETED = "user_deleted"  # close the user's connections
    SESSIONS_ENDED = "sessions_ended"  # password reset or sessions revoked: close them
    ROOM_DELETED = "room_deleted"  # tell the members, forget the room


@dataclass(frozen=True, slots=True)
class AdminEvent:
    id: int
    kind: str
    user_id: int | None
    room_id: int | None
    room_name: str | None


@dataclass(frozen=True, slots=True)
class UserSummary:
    """An account as an operator sees it (never its hash)."""

    id: int
    username: str
    status: str  # active | disabled | deleted
    admin: bool
    created_ms: int
    sessions: int


@dataclass(frozen=True, slots=True)
class UserDetails:
    summary: UserSummary
    messages: int
    last_message_ms: int | None


@dataclass(frozen=True, slots=True)
class RoomSummary:
    id: int
    name: str
    created_ms: int
    messages: int
    last_message_ms: int | None


@dataclass
class CheckReport:
    """What ``check`` found: the schema version, row counts, and every problem seen."""

    database: str
    schema_version: int
    latest_version: int
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def status_of(password_hash: str) -> str:
    if password_hash == DELETED_HASH:
        return "deleted"
    return "disabled" if password_hash.startswith(DISABLED_MARK) else "active"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- adapters


class Executor(Protocol):
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...


class Database(Executor, Protocol):
    backend: str

    async def fetch_hot(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``fetch`` for a short indexed read on a hot path (may run on the event loop)."""
        ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Executor]: ...

    async def checkpoint(self) -> None: ...

    async def close(self) -> None: ...


class SQLiteDatabase:
    """One aiosqlite connection; transactions take the write lock at once (IMMEDIATE)."""

    backend = "sqlite"

    def __init__(self, db: aiosqlite.Connection, path: Path | None = None) -> None:
        self._db = db
        self._one_transaction = asyncio.Lock()  # one connection: one transaction at a time
        self._path = path
        self._hot: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SQLiteDatabase:
        """Open an existing database (the admin commands never create one)."""
        if not await asyncio.to_thread(path.is_file):
            raise StartupError(f"There is no database at {path}; check --db.")
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StartupError(f"Cannot open the database {path}: {exc}.") from None
        await db.executescript(
            "PRAGMA foreign_keys=ON;PRAGMA secure_delete=ON;PRAGMA busy_timeout=10000;"
        )
        return cls(db, path)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return [tuple(row) for row in await self._db.execute_fetchall(sql, params)]
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from None

    async def fetch_hot(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read on the event loop from a read-only connection of our own; else as ``fetch``.

        A short indexed read takes microseconds, while a hop to aiosqlite's
        thread and back costs more than the read itself (two thread
        switches and a wake-up of the loop). WAL readers never wait for the
        writer; the rare moment a read would wait (``SQLITE_BUSY``: the WAL is
        being reset) takes the thread instead, so the loop never blocks.
        """
        try:
            return self._hot_connection().execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return await self.fetch(sql, params)

    def _hot_connection(self) -> sqlite3.Connection:
        if self._hot is None:
            if self._path is None:
                raise sqlite3.OperationalError("no file to open a hot-read connection on")
            hot = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            hot.executescript("PRAGMA query_only=ON;PRAGMA busy_timeout=0;")
            self._hot = hot
        return self._hot

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            async with self._db.execute(sql, params) as cursor:
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._one_transaction:
            await self.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                with contextlib.suppress(sqlite3.Error, StoreError):
                    await self._db.execute("ROLLBACK")
                raise
            await self.execute("COMMIT")

    async def checkpoint(self) -> None:
        """Merge the search index and fold the WAL in now, so text just deleted leaves
        the disk (best effort): the index keeps its copy of the words until merged."""
        with contextlib.suppress(sqlite3.Error, StoreError):
            await self.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
        with contextlib.suppress(sqlite3.Error, StoreError):
            await self.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        if self._hot is not None:
            self._hot.close()
            self._hot = None
        await self._db.close()


class _PostgresExecutor:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._conn.fetch(_numbered(sql), *params)]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        status = await self._conn.execute(_numbered(sql), *params)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


class PostgresDatabase:
    """A pool of at most two connections that reconnects by itself after an outage."""

    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                url,
                connection_class=PooledConnection,
                min_size=0,
                max_size=2,
                timeout=10,
                command_timeout=30,
                server_settings={"application_name": "clubroom-admin"},
            )
        except Exception as exc:  # one sentence, never a traceback or a password
            raise StartupError(f"Cannot use the {describe_url(url)}: {_first_line(exc)}.") from None
        return cls(pool)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            return await _PostgresExecutor(conn).fetch(sql, params)

    async def fetch_hot(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The server is remote: every read is a round trip, hot or not."""
        return await self.fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection() as conn:
            return await _PostgresExecutor(conn).execute(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._connection() as conn, conn.transaction():
            yield _PostgresExecutor(conn)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=10) as conn:
                yield conn
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            raise UnavailableError(f"the database is unreachable ({_first_line(exc)})") from None
        except asyncpg.PostgresError as exc:
            raise StoreError(_first_line(exc)) from None

    async def checkpoint(self) -> None:
        """PostgreSQL reuses freed space on its own; nothing to fold."""

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self._pool.close()
                return
        self._pool.terminate()


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2…`` (the admin SQL has no literal ``?``)."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------ queries

_USER_SUMMARY = (
    "SELECT u.id, u.username, u.password_hash, "
    "EXISTS (SELECT 1 FROM admins a WHERE a.user_id = u.id), u.created_ms, "
    "(SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id AND t.expires_ms > ?) "
    "FROM users u"
)
_ROOM_SUMMARY = (
    "SELECT r.id, r.name, r.created_ms, "
    "(SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id AND m.kind = 0), "
    "(SELECT m.at_ms FROM messages m WHERE m.room_id = r.id AND m.kind = 0 "
    "ORDER BY m.id DESC LIMIT 1) "
    "FROM rooms r"
)


class AdminStore:
    """The admin commands' reads and actions, and the event log servers follow."""

    def __init__(self, db: Database, description: str) -> None:
        self.db = db
        self.description = description

    @property
    def backend(self) -> str:
        return self.db.backend

    async def close(self) -> None:
        await self.db.close()

    # ------------------------------------------------------------ schema

    async def schema_version(self) -> int:
        if self.db.backend == "sqlite":
            return int((await self.db.fetch("PRAGMA user_version"))[0][0])
        rows = await self.db.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
        )
        if not rows:
            return 0
        rows = await self.db.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(rows[0][0])

    async def require_admin_schema(self) -> None:
        """Refuse to work on a database whose schema predates the admin tables."""
        version = await self.schema_version()
        if version < ADMIN_SCHEMA:
            raise StartupError(
                f"The database {self.description} has schema version {version}; the admin "
                f"commands need {ADMIN_SCHEMA} or later: run `clubroom-server migrate` "
                "(or start the upgraded server) first."
            )

    # ------------------------------------------------------------- users

    async def users(self) -> list[UserSummary]:
        rows = await self.db.fetch(_USER_SUMMARY + " ORDER BY u.id", (now_ms(),))
        return [_user_summary(row) for row in rows]

    async def user(self, key: str) -> UserSummary | None:
        rows = await self.db.fetch(_USER_SUMMARY + " WHERE u.key = ?", (now_ms(), key))
        return _user_summary(rows[0]) if rows else None

    async def user_details(self, user: UserSummary) -> UserDetails:
        rows = await self.db.fetch(
            "SELECT COUNT(*), MAX(at_ms) FROM messages WHERE author_id = ? AND kind = 0", (user.id,)
        )
        return UserDetails(user, int(rows[0][0]), rows[0][1])

    async def disable_user(self, user_id: int) -> bool:
        """Lock the account and end its sessions; False if it was not active."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET password_hash = ? || password_hash "
                "WHERE id = ? AND password_hash NOT LIKE ?",
                (DISABLED_MARK, user_id, DISABLED_MARK + "%"),
            )
            await tx.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            await _record(tx, self.db.backend, EventKind.USER_DISABLED, user_id=user_id)
        return changed > 0

    async def enable_user(self, user_id: int) -> bool:
        """Unlock a disabled account (its old password works again); False if not disabled."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET password_hash = substr(password_hash, 2) "
                "WHERE id = ? AND password_hash LIKE ? AND password_hash <> ?",
                (user_id, DISABLED_MARK + "%", DELETED_HASH),
            )
        return changed > 0

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """A new password (a disabled account stays disabled) and no session left."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE users SET password_hash = CASE WHEN password_hash LIKE ? "
                "THEN ? ELSE ? END WHERE id = ?",
                (DISABLED_MARK + "%", DISABLED_MARK + password_hash, password_hash, user_id),
            )
            await tx.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            await _record(tx, self.db.backend, EventKind.SESSIONS_ENDED, user_id=user_id)

    async def delete_user(self, user_id: int) -> None:
        """Erase the credentials for good; messages and the reserved name stay."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (DELETED_HASH, user_id)
            )
            await tx.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            await tx.execute("DELETE FROM admins WHERE user_id = ?", (user_id,))
            await _record(tx, self.db.backend, EventKind.USER_DELETED, user_id=user_id)

    async def set_admin(self, user_id: int, admin: bool) -> bool:
        """Grant or revoke the admin role; False if it already was so."""
        async with self.db.transaction() as tx:
            if admin:
                exists = await tx.fetch("SELECT 1 FROM admins WHERE user_id = ?", (user_id,))
                if exists:
                    return False
                await tx.execute(
                    "INSERT INTO admins (user_id, granted_ms) VALUES (?, ?)", (user_id, now_ms())
                )
                return True
            return await tx.execute("DELETE FROM admins WHERE user_id = ?", (user_id,)) > 0

    async def is_admin(self, user_id: int) -> bool:
        """Asked at every admin request, so a revoked role ends at once."""
        return bool(await self.db.fetch("SELECT 1 FROM admins WHERE user_id = ?", (user_id,)))

    async def revoke_sessions(self, user_id: int) -> int:
        """Log the user out everywhere; return how many sessions (tokens) ended."""
        async with self.db.transaction() as tx:
            ended = await tx.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            await _record(tx, self.db.backend, EventKind.SESSIONS_ENDED, user_id=user_id)
        return ended

    # ------------------------------------------------------------- rooms

    async def rooms(self) -> list[RoomSummary]:
        return [RoomSummary(*row) for row in await self.db.fetch(_ROOM_SUMMARY + " ORDER BY r.id")]

    async def room(self, key: str) -> RoomSummary | None:
        rows = await self.db.fetch(_ROOM_SUMMARY + " WHERE r.key = ?", (key,))
        return RoomSummary(*rows[0]) if rows else None

    async def delete_room(self, room: RoomSummary) -> None:
        """Delete the room and every message in it; running servers tell its members."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM rooms WHERE id = ?", (room.id,))
            await _record(
                tx, self.db.backend, EventKind.ROOM_DELETED, room_id=room.id, room_name=room.name
            )
        await self.db.checkpoint()

    # ------------------------------------------------------------ events

    async def last_event_id(self) -> int:
        return int((await self.db.fetch("SELECT COALESCE(MAX(id), 0) FROM admin_events"))[0][0])

    async def events_after(self, event_id: int) -> list[AdminEvent]:
        rows = await self.db.fetch(
            "SELECT id, kind, user_id, room_id, room_name FROM admin_events "
            "WHERE id > ? ORDER BY id",
            (event_id,),
        )
        return [AdminEvent(*row) for row in rows]

    # ------------------------------------------------------------- check

    async def check(self) -> CheckReport:
        """Schema version, counts, and the consistency rules the server relies on."""
        report = CheckReport(
            self.description, await self.schema_version(), len(scripts(self.db.backend))
        )
        if report.schema_version < report.latest_version:
            report.problems.append(
                f"schema version {report.schema_version} is older than "
                f"{report.latest_version}: run `clubroom-server migrate`"
            )
        if self.db.backend == "sqlite":
            integrity = [row[0] for row in await self.db.fetch("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                report.problems += [f"integrity: {line}" for line in integrity[:20]]
            for table, rowid, parent, _ in await self.db.fetch("PRAGMA foreign_key_check"):
                report.problems.append(f"{table} row {rowid} refers to a missing {parent} row")
        for table in TABLES if report.schema_version >= ADMIN_SCHEMA else TABLES[:-1]:
            report.counts[table] = int((await self.db.fetch(f"SELECT COUNT(*) FROM {table}"))[0][0])
        if report.schema_version >= 2:
            broken = await self.db.fetch(
                "SELECT r.name FROM rooms r WHERE r.last_seq <> "
                "(SELECT COALESCE(MAX(m.seq), 0) FROM messages m WHERE m.room_id = r.id) "
                "OR (SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id) <> r.last_seq"
            )
            report.problems += [f"room {name!r}: message sequence has gaps" for (name,) in broken]
        return report


async def _record(
    tx: Executor,
    backend: str,
    kind: EventKind,
    *,
    user_id: int | None = None,
    room_id: int | None = None,
    room_name: str | None = None,
) -> None:
    """Log an action for running servers, in the action's own transaction.

    On PostgreSQL the table lock makes ids follow commit order, so a server
    reading ``id > last`` can never skip an event committed late.
    """
    if backend == "postgres":
        await tx.execute("LOCK TABLE admin_events IN EXCLUSIVE MODE")
    at = now_ms()
    await tx.execute("DELETE FROM admin_events WHERE at_ms < ?", (at - EVENT_RETENTION_MS,))
    await tx.execute(
        "INSERT INTO admin_events (at_ms, kind, user_id, room_id, room_name) "
        "VALUES (?, ?, ?, ?, ?)",
        (at, kind.value, user_id, room_id, room_name),
    )


def _user_summary(row: tuple[Any, ...]) -> UserSummary:
    user_id, username, password_hash, admin, created_ms, sessions = row
    return UserSummary(
        user_id, username, status_of(password_hash), bool(admin), created_ms, int(sessions)
    )


async def open_admin_store(url: str | Path) -> AdminStore:
    """The admin view of the database at ``url`` (a file path, sqlite:/// or postgresql://)."""
    if is_postgres_url(url):
        return AdminStore(await PostgresDatabase.open(str(url)), describe_url(url))
    path = sqlite_path(url)
    if path is None:
        raise StartupError(f"--db {url} is not a database Clubroom knows.")
    return AdminStore(await SQLiteDatabase.open(path), describe_url(url))


# ------------------------------------------------------------------ backup


def backup_sqlite(source: Path, target: Path) -> None:
    """Copy a live SQLite database consistently with SQLite's online backup API.

    One step (``pages=-1``) copies every page inside one read transaction: a
    snapshot of one moment, while the server goes on writing (WAL readers
    never block the writer). The copy is written next to ``target`` and
    renamed into place once complete, and it is private (0600) like the
    database itself.
    """
    if target.exists():
        raise StartupError(f"{target} already exists; choose a new name (backups never overwrite).")
    if not source.is_file():
        raise StartupError(f"There is no database at {source}; check --db.")
    partial = target.with_name(target.name + ".partial")
    previous = os.umask(0o077)
    try:
        with contextlib.closing(sqlite3.connect(source, timeout=10)) as src:
            src.execute("PRAGMA query_only=ON")
            with contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst, pages=-1)
        os.replace(partial, target)
    except sqlite3.Error as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise StartupError(f"The backup of {source} failed: {exc}.") from None
    finally:
        os.umask(previous)

"""The embedded backend: one SQLite file, the zero-set-up default.

Writes go through one writer connection on one thread (``writer.py``):
whatever arrives while a commit is in flight becomes the next transaction
(group commit), so durability (``synchronous=FULL``) costs one fsync per
batch, not per message, and the whole batch is one thread round trip. Reads
use their own connection and never wait behind writes (WAL). WAL checkpoints
run on a third connection, off the commit path. The single writer is the
"lock on the room's row": it takes a message's id and the room's next ``seq``
in the transaction that inserts it, so both follow commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

from clubroom_server.store import migrations
from clubroom_server.store.batch import Failed, Refused, by_type, settle
from clubroom_server.store.changes import (
    MAX_REACTIONS_PER_MESSAGE as MAX_REACTIONS,
)
from clubroom_server.store.changes import (
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
from clubroom_server.store.interface import (
    DEFAULT_SEARCH_TIMEOUT,
    DuplicateError,
    NotFoundError,
    OnStored,
    SchemaError,
    StartupError,
    StoreError,
    UnavailableError,
)
from clubroom_server.store.pacing import CommitPacer
from clubroom_server.store.purge import SearchPurger, count_deletion, pending
from clubroom_server.store.records import (
    TABLE_OF,
    TABLES,
    DumpBatch,
    HighWater,
    MessageRecord,
    RoomRecord,
    UserRecord,
)
from clubroom_server.store.sqlite_search import SearchConnection
from clubroom_server.store.writer import WriterThread

log = logging.getLogger(__name__)
# aiosqlite logs every call with its arguments at DEBUG (hashes included):
# clubroom_server.logs holds it at INFO, for every server and every command.

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
CHECKPOINT_INTERVAL = 1.0  # seconds between passive WAL checkpoints
APPLICATION_ID = 0x436C7562  # "Club": marks a file as Clubroom's (PRAGMA application_id)
MIGRATIONS = migrations.scripts("sqlite")
V1_TABLES = frozenset({"users", "tokens", "rooms", "messages"})

# Extended result codes (sqlite3.IntegrityError.sqlite_errorcode), not error texts.
_UNIQUE_CODES = frozenset({2067, 1555})  # SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY
_FOREIGN_KEY_CODE = 787  # SQLITE_CONSTRAINT_FOREIGNKEY
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (past busy_timeout)

MESSAGE_COLUMNS = ", ".join(TABLE_OF[MessageRecord].columns)
USER_COLUMNS = ", ".join(TABLE_OF[UserRecord].columns)
ROOM_COLUMNS = ", ".join(TABLE_OF[RoomRecord].columns)

MESSAGE_FIELDS = TABLE_OF[MessageRecord].columns
INSERT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({', '.join('?' for _ in MESSAGE_FIELDS)})"
)
REACTION_COUNTS = (
    "SELECT message_id, emoji, COUNT(*), MAX(user_id = ?) FROM reactions "
    "WHERE message_id IN ({marks}) GROUP BY message_id, emoji ORDER BY message_id, MIN(id)"
)
WriteOp = Callable[[sqlite3.Connection], Any]


class _Append(NamedTuple):
    """A message to store: consecutive ones in a batch are inserted together."""

    room_id: int
    author_id: int
    author: str
    text: str
    at_ms: int
    nonce: str | None
    reply_to: int | None = None


class _Write(NamedTuple):
    op: WriteOp | _Append
    future: asyncio.Future[Any]
    on_stored: Callable[[Any], None] | None


class SQLiteStore:
    """The ``Store`` interface on one SQLite file."""

    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        commit_interval: float = 0.0,
        search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = path
        self._synchronous = synchronous.upper()
        self._writer = WriterThread(_commit_batch, self._settle, CommitPacer(commit_interval))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: aiosqlite.Connection | None = None
        self._closing = False
        self._checkpointer: aiosqlite.Connection | None = None
        self._truncate_wanted = asyncio.Event()
        self._commits_since_checkpoint = 0
        self._checkpoint_task: asyncio.Task[None] | None = None
        self.search_purger = SearchPurger(self._write, self._truncate_wanted.set)
        self._search = SearchConnection(search_timeout)

    @property
    def description(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Create folder (0700) and file (0600), check it is ours, migrate, start the writer."""
        try:
            await self._open()
        except BaseException:
            await self._release()
            raise

    async def _open(self) -> None:
        _check_not_truncated(self.path)
        with _private_files():
            self._make_folder()
            self._loop = asyncio.get_running_loop()
            self._writer.start(self._loop)
            try:
                await self._writer.open_connection(
                    self.path,
                    # Checkpoints run on their own connection, never inside a commit.
                    self._pragmas + "PRAGMA journal_mode=WAL;PRAGMA wal_autocheckpoint=0;",
                )
                await self._writer.run(_migrate, self.path)
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only=ON")
                await self._search.open(await self._connect())
                self._checkpointer = await self._connect()
            except sqlite3.Error as exc:
                raise _startup_error(self.path, exc) from None
        self._checkpoint_task = asyncio.create_task(
            self._checkpoint_loop(), name="store-checkpointer"
        )
        self.search_purger.start(due=bool(await self._writer.run(pending)))

    def _make_folder(self) -> None:
        folder = self.path.parent
        if folder.is_dir():
            return
        try:
            folder.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise StartupError(
                f"Cannot create the folder {folder} for the database ({exc.strerror}); "
                "create it or choose another --db."
            ) from None

    @property
    def _pragmas(self) -> str:
        return (
            f"PRAGMA synchronous={self._synchronous};"
            "PRAGMA foreign_keys=ON;"
            "PRAGMA secure_delete=ON;"
            "PRAGMA busy_timeout=5000;"
        )

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path)
        try:
            await db.executescript(self._pragmas)
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        """Finish every queued write, fold the WAL in, close every connection (idempotent)."""
        await self.search_purger.stop()
        self._closing = True
        if self._writer.running:
            await self._writer.run(lambda _: None)  # every write queued before is settled
        if self._checkpoint_task is not None:
            self._truncate_wanted.set()  # wake it: it sees the store is closing
            await self._checkpoint_task
            self._checkpoint_task = None
            await self._checkpoint("TRUNCATE")
        await self._release()

    async def ping(self) -> None:
        await self._read("SELECT 1")

    def pool_usage(self) -> None:
        return None  # a writer, a reader and a search connection, always open

    async def _release(self) -> None:
        await self._search.close()
        for db in (self._checkpointer, self._reader):
            if db is not None:
                await db.close()
        self._checkpointer = self._reader = None
        await self._writer.close()

    # ------------------------------------------------------------ write path

    def _enqueue(
        self, op: WriteOp | _Append, on_stored: Callable[[Any], None] | None = None
    ) -> Any:
        """Queue one write for the next group commit; await the result once durable."""
        if self._closing or self._loop is None:
            raise StoreError("the store is closing" if self._closing else "the store is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._writer.submit(_Write(op, future, on_stored))
        return future

    async def _write(
        self, op: WriteOp | _Append, on_stored: Callable[[Any], None] | None = None
    ) -> Any:
        return await self._enqueue(op, on_stored)

    def _settle(self, batch: list[_Write], results: list[Any]) -> None:
        """On the loop: a batch the writer thread committed (or failed), in commit order."""
        self._commits_since_checkpoint += 1
        settle(batch, results)

    # ----------------------------------------------------------------- users

    async def add_user(
        self, username: str, key: str, password_hash: str, now_ms: int
    ) -> UserRecord:
        def insert(db: sqlite3.Connection) -> UserRecord:
            cursor = db.execute(
                "INSERT INTO users (username, key, password_hash, created_ms) VALUES (?, ?, ?, ?)",
                (username, key, password_hash, now_ms),
            )
            assert cursor.lastrowid is not None
            return UserRecord(cursor.lastrowid, username, key, password_hash, now_ms)

        return await self._write(insert)  # type: ignore[no-any-return]

    async def user_by_key(self, key: str) -> UserRecord | None:
        rows = await self._read(f"SELECT {USER_COLUMNS} FROM users WHERE key = ?", (key,))
        return UserRecord(*rows[0]) if rows else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._write(
            _statement("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
        )

    # ---------------------------------------------------------------- tokens

    async def add_token(self, token_hash: str, user_id: int, expires_ms: int) -> None:
        await self._write(
            _statement(
                "INSERT INTO tokens (hash, user_id, expires_ms) VALUES (?, ?, ?)",
                (token_hash, user_id, expires_ms),
            )
        )

    async def user_by_token(self, token_hash: str, now_ms: int) -> tuple[UserRecord, int] | None:
        rows = await self._read(
            "SELECT u.id, u.username, u.key, u.password_hash, u.created_ms, t.expires_ms, t.hash "
            "FROM tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.hash = ? AND t.expires_ms > ?",
            (token_hash, now_ms),
        )
        if not rows:
            return None
        *user, expires_ms, stored_hash = rows[0]
        if not hmac.compare_digest(stored_hash, token_hash):
            return None
        return UserRecord(*user), expires_ms

    async def revoke_token(self, token_hash: str) -> None:
        await self._write(_statement("DELETE FROM tokens WHERE hash = ?", (token_hash,)))

    async def purge_expired_tokens(self, now_ms: int) -> None:
        await self._write(_statement("DELETE FROM tokens WHERE expires_ms <= ?", (now_ms,)))

    # ----------------------------------------------------------------- rooms

    async def add_room(self, name: str, key: str, now_ms: int) -> RoomRecord:
        def insert(db: sqlite3.Connection) -> RoomRecord:
            cursor = db.execute(
                "INSERT INTO rooms (name, key, created_ms) VALUES (?, ?, ?)", (name, key, now_ms)
            )
            assert cursor.lastrowid is not None
            return RoomRecord(cursor.lastrowid, name, key, now_ms, 0)

        return await self._write(insert)  # type: ignore[no-any-return]

    async def all_rooms(self) -> list[RoomRecord]:
        rows = await self._read(f"SELECT {ROOM_COLUMNS} FROM rooms ORDER BY id")
        return [RoomRecord(*row) for row in rows]

    async def delete_room(self, room_id: int) -> None:
        """Delete a room; its messages go with it (``ON DELETE CASCADE``).

        ``secure_delete`` overwrites the freed pages, the FTS5 index is merged
        so that its copy of the words goes too, and the checkpoint that
        follows empties the WAL, so the text cannot be read back from
        ``clubroom.db*`` afterwards.
        """
        await self._write(_statement("DELETE FROM rooms WHERE id = ?", (room_id,)))
        # The search index keeps its copy of the words until it is merged.
        await self._write(_optimize_search_index, on_stored=lambda _: self._truncate_wanted.set())

    async def _checkpoint_loop(self) -> None:
        """Fold the WAL into the database now and then, off the commit path.

        A passive checkpoint every second keeps the WAL short without ever
        blocking a writer; after a room deletion the WAL is also truncated, so
        the deleted text leaves the disk. It stops when the store closes (by
        flag, not cancellation: a cancelled wait can be lost on Python 3.11).
        """
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECKPOINT_INTERVAL):
                    await self._truncate_wanted.wait()
            if self._closing:
                return
            if self._truncate_wanted.is_set():
                self._truncate_wanted.clear()
                await self._checkpoint("TRUNCATE")
            elif self._commits_since_checkpoint:
                await self._checkpoint("PASSIVE")

    async def _checkpoint(self, mode: str) -> None:
        if self._checkpointer is None:
            return
        self._commits_since_checkpoint = 0
        try:
            await self._checkpointer.execute(f"PRAGMA wal_checkpoint({mode})")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)

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

        A deletion is answered once its row no longer holds the text and the
        search index no longer finds it; the index's old copy of the words is
        erased in the background within about a second (``purge``), then
        the WAL is truncated.
        """
        result: ChangeRecord = await self._write(lambda db: _apply_change(db, change), on_stored)
        if change.kind == ChangeKind.DELETE and result.row is not None:
            self.search_purger.wanted()
        return result

    async def last_row(self, room_id: int) -> MessageRecord | None:
        rows = await self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? ORDER BY id DESC LIMIT 1",
            (room_id,),
        )
        return MessageRecord(*rows[0]) if rows else None

    async def messages_by_id(self, room_id: int, ids: Sequence[int]) -> list[MessageRecord]:
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = await self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND id IN ({marks})",
            (room_id, *ids),
        )
        return [MessageRecord(*row) for row in rows]

    async def reactions(
        self, message_ids: Sequence[int], user_id: int
    ) -> dict[int, list[ReactionCount]]:
        if not message_ids:
            return {}
        marks = ", ".join("?" for _ in message_ids)
        rows = await self._read(REACTION_COUNTS.format(marks=marks), (user_id, *message_ids))
        return counted(rows)

    async def search_messages(
        self, room_id: int, phrases: Sequence[str], newest: bool, offset: int, limit: int
    ) -> tuple[list[SearchHit], bool]:
        """Messages of the room matching every phrase, newest or best (bm25) first.

        Best first ranks the newest ``BEST_CANDIDATES`` matches (see
        sqlite_search); a search past its deadline raises ``SearchTooSlow``.

        The phrases are words only (``search.parse_query``); each is quoted as
        an FTS5 string, so no user input is ever read as FTS5 syntax.
        """
        match = " ".join(f'"{phrase}"' for phrase in phrases)
        try:
            rows = await self._search.rows(room_id, match, newest, offset, limit + 1)
        except sqlite3.Error as exc:
            log.error("search failed: %s", exc)
            raise _failure(exc) from None
        return [SearchHit(row) for row in rows[:limit]], len(rows) > limit

    async def message_by_nonce(
        self, room_id: int, author_id: int, nonce: str
    ) -> MessageRecord | None:
        rows = await self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages "
            "WHERE room_id = ? AND author_id = ? AND nonce = ?",
            (room_id, author_id, nonce),
        )
        return MessageRecord(*rows[0]) if rows else None

    async def latest_messages(self, room_id: int, limit: int) -> tuple[list[MessageRecord], bool]:
        return await self.messages_before(room_id, None, limit)

    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        bound = "" if before is None else "AND id < ?"
        params: tuple[int, ...] = (room_id,) if before is None else (room_id, before)
        rows = await self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND kind = 0 {bound} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit + 1),
        )
        more = len(rows) > limit
        return [MessageRecord(*row) for row in reversed(rows[:limit])], more

    async def messages_after(
        self, room_id: int, after: int, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        rows = await self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (room_id, after, limit + 1),
        )
        return [MessageRecord(*row) for row in rows[:limit]], len(rows) > limit

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StoreError("the store is not open")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            log.error("database read failed: %s", exc)
            raise _failure(exc) from None

    # ------------------------------------------------------- moving the data

    async def is_empty(self) -> bool:
        for table in ("users", "tokens", "rooms", "messages"):
            if await self._read(f"SELECT 1 FROM {table} LIMIT 1"):
                return False
        return True

    async def dump(self, batch_size: int = 1000) -> AsyncIterator[DumpBatch]:
        for table in TABLES:
            sql, after = table.page(["?"] * table.key_size, "?"), table.first_key
            while rows := await self._read(sql, (*after, batch_size)):
                yield [table.record(*row) for row in rows]
                after = table.key_of(rows[-1])

    async def high_water(self) -> HighWater:
        rows = await self._read(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM users), "
            "(SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'rooms'), "
            "(SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'messages')"
        )
        return HighWater(*rows[0])

    async def load(self, batch: Sequence[object]) -> None:
        await self._write(lambda db: _insert_records(db, batch))

    async def raise_high_water(self, marks: HighWater) -> None:
        def raise_sequences(db: sqlite3.Connection) -> None:
            for table, mark in (("rooms", marks.rooms), ("messages", marks.messages)):
                updated = db.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (mark, table)
                ).rowcount
                if not updated and mark:
                    db.execute(
                        "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, mark)
                    )

        await self._write(raise_sequences)


def _insert_records(db: sqlite3.Connection, batch: Sequence[object]) -> None:
    """Insert dumped records with every id and seq as they were."""
    for kind, records in by_type(batch).items():
        table = TABLE_OF[kind]
        marks = [f"?{n}" for n in range(1, len(table.columns) + 1)]
        db.executemany(table.insert(marks), map(table.row, records))


# ---------------------------------------------------------------- start-up


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    """Files and folders created meanwhile are the owner's alone (0600 / 0700).

    The ``-wal`` and ``-shm`` files SQLite creates later copy the database
    file's permissions, so they are private too.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _in_use(path: Path) -> bool:
    """True while a write-ahead log holds pages: another connection (a running server)
    may be checkpointing, which writes the header's new size before the pages that
    grow the file, so a short file is then no sign of damage."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _check_not_truncated(path: Path) -> None:
    """Refuse a file shorter than its header says (copied or written only in part)."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
            size = file.seek(0, os.SEEK_END)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return  # a missing file is created; the others are named by SQLite below
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        if size:
            raise StartupError(
                f"{path} is not a SQLite database (damaged, or another kind of file); "
                "restore it from a backup or choose another --db."
            )
        return
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    short = size < pages * page_size
    if pages and valid_for == change_counter and short and not _in_use(path):
        raise StartupError(
            f"{path} is truncated ({size} of {pages * page_size} bytes); "
            "restore it from a backup or choose another --db."
        )


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is Clubroom's and not newer than this code, then migrate it."""
    (application_id,) = db.execute("PRAGMA application_id").fetchone()
    (version,) = db.execute("PRAGMA user_version").fetchone()
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    tables.discard("sqlite_sequence")
    new_file = version == 0 and not tables
    # Schema 1 predates the application id: recognise it by its tables.
    first_schema = version == 1 and tables >= V1_TABLES
    ours = application_id == APPLICATION_ID or (application_id == 0 and (new_file or first_schema))
    if not ours:
        raise SchemaError(
            f"{path} is not a Clubroom database (it belongs to another application); "
            "choose another --db."
        )
    if version > len(MIGRATIONS):
        raise SchemaError(
            f"{path} has schema version {version}, newer than this Clubroom understands "
            f"(up to {len(MIGRATIONS)}); upgrade Clubroom or choose another --db."
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        log.info("migrating %s to schema version %d", path, number)
        db.executescript(
            f"BEGIN;{script};PRAGMA user_version={number};"
            f"PRAGMA application_id={APPLICATION_ID};COMMIT;"
        )


def _startup_error(path: Path, exc: sqlite3.Error) -> StartupError:
    """One sentence for the operator: which file, what is wrong, what to do."""
    if isinstance(exc, StartupError):
        return exc
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return StartupError(
            f"{path} is not a readable SQLite database (damaged, or another kind of file); "
            "restore it from a backup or choose another --db."
        )
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        return StartupError(
            f"Cannot open {path} for writing: check that the file and its folder are writable "
            "by this user, or choose another --db."
        )
    return StartupError(f"Cannot open the database {path}: {text}.")


# ------------------------------------------------------------- write path


def _statement(sql: str, params: Sequence[Any]) -> WriteOp:
    return lambda db: db.execute(sql, params).rowcount


def _commit_batch(db: sqlite3.Connection, batch: list[_Write]) -> list[Any]:
    """On the writer thread: commit a batch in one transaction; on failure each write alone.

    A write that fails alone is a ``Failed`` result: its caller gets the error,
    the others of the batch are stored.
    """
    try:
        return _commit_all(db, [write.op for write in batch])
    except (sqlite3.Error, ValueError, OverflowError) as exc:
        if len(batch) == 1:
            log.error("database write failed: %s", exc)
            return [Failed(_failure(exc))]
    return [result for write in batch for result in _commit_batch(db, [write])]


def _commit_all(db: sqlite3.Connection, ops: list[WriteOp | _Append]) -> list[Any]:
    """One transaction for the whole batch; a write a rule refuses is skipped, not fatal.

    Consecutive appends are inserted with one ``executemany``; if a rule
    refuses one of several, the batch is rolled back and raised, and the
    caller retries each write alone. Any other error rolls the whole batch
    back (and is raised).
    """
    results: list[Any] = []
    try:
        # Take the write lock first: the ids and seqs read below stay ours even
        # if another process (a second server, a copy) shares the file.
        db.execute("BEGIN IMMEDIATE")
        for run in _runs(ops):
            try:
                if isinstance(run[0], _Append):
                    results += _append_run(db, run)  # type: ignore[arg-type]
                else:
                    results.append(run[0](db))  # type: ignore[operator]
            except sqlite3.IntegrityError as exc:
                if len(run) > 1:
                    raise
                results.append(Refused(_refusal(exc)))
            except (DuplicateError, NotFoundError, ChangeRefused) as exc:
                results.append(Refused(exc))
        db.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        raise
    return results


def _runs(ops: list[WriteOp | _Append]) -> list[list[WriteOp | _Append]]:
    """Consecutive appends form one run; every other write is a run alone."""
    runs: list[list[WriteOp | _Append]] = []
    for op in ops:
        if isinstance(op, _Append) and runs and isinstance(runs[-1][0], _Append):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _append_run(db: sqlite3.Connection, appends: list[_Append]) -> list[Any]:
    """Number a run of messages (ids after the largest ever used, seqs per room) and insert it.

    The single writer is the lock: nothing else takes ids or seqs meanwhile,
    so reading the high-water marks once per run is safe, and the explicit
    ids move ``sqlite_sequence`` on (AUTOINCREMENT: never reused).
    """
    room_ids = sorted({append.room_id for append in appends})
    marks = ", ".join("?" for _ in room_ids)
    last_seq = dict(
        db.execute(f"SELECT id, last_seq FROM rooms WHERE id IN ({marks})", room_ids).fetchall()
    )
    (last_id,) = db.execute(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)"
    ).fetchone()
    results: list[Any] = []
    rows: list[tuple[Any, ...]] = []
    for append in appends:
        if append.room_id not in last_seq:
            results.append(Refused(NotFoundError("the room is not stored")))
            continue
        last_id += 1
        seq = last_seq[append.room_id] = last_seq[append.room_id] + 1
        record = MessageRecord(last_id, append.room_id, seq, *append[1:6], reply_to=append.reply_to)
        rows.append(astuple(record))
        results.append(record)
    db.executemany(INSERT_MESSAGE, rows)
    db.executemany(
        "UPDATE rooms SET last_seq = ? WHERE id = ?",
        [(seq, room_id) for room_id, seq in last_seq.items()],
    )
    return results


def _apply_change(db: sqlite3.Connection, change: MessageChange) -> ChangeRecord:
    """Check and apply one change, and record it as a change row (on the writer thread)."""
    target = _message(db, change.message_id)
    reason = refusal(change, target)
    if reason is not None:
        raise ChangeRefused(reason)
    if not _write_change(db, change):
        return ChangeRecord(None, target, _reactions_of(db, change), change)  # type: ignore[arg-type]
    (last_id,) = db.execute(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)"
    ).fetchone()
    (seq,) = db.execute(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
        (change.room_id,),
    ).fetchone()
    row = change_row(change, last_id + 1, seq)
    db.execute(INSERT_MESSAGE, astuple(row))
    after = _message(db, change.message_id)
    assert after is not None
    return ChangeRecord(row, after, _reactions_of(db, change), change)


def _write_change(db: sqlite3.Connection, change: MessageChange) -> bool:
    """Write the change to the message (or its reactions); False if nothing changed."""
    if change.kind == ChangeKind.EDIT:
        db.execute(
            "UPDATE messages SET text = ?, edited_ms = ? WHERE id = ?",
            (change.text, change.at_ms, change.message_id),
        )
    elif change.kind == ChangeKind.DELETE:
        # The text itself is overwritten (secure_delete zeroes the freed bytes).
        db.execute(
            "UPDATE messages SET text = '', deleted_ms = ?, edited_ms = NULL WHERE id = ?",
            (change.at_ms, change.message_id),
        )
        db.execute("DELETE FROM reactions WHERE message_id = ?", (change.message_id,))
        count_deletion(db)
    elif change.kind == ChangeKind.REACT:
        return _add_reaction(db, change)
    else:
        return bool(
            db.execute(
                "DELETE FROM reactions WHERE message_id = ? AND user_id = ? AND emoji = ?",
                (change.message_id, change.user_id, change.emoji),
            ).rowcount
        )
    return True


def _add_reaction(db: sqlite3.Connection, change: MessageChange) -> bool:
    emojis = {
        emoji
        for (emoji,) in db.execute(
            "SELECT DISTINCT emoji FROM reactions WHERE message_id = ?", (change.message_id,)
        )
    }
    if change.emoji not in emojis and len(emojis) >= MAX_REACTIONS:
        raise ChangeRefused(TOO_MANY_REACTIONS)
    return bool(
        db.execute(
            "INSERT INTO reactions (message_id, user_id, emoji, at_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (change.message_id, change.user_id, change.emoji, change.at_ms),
        ).rowcount
    )


def _message(db: sqlite3.Connection, message_id: int) -> MessageRecord | None:
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    return MessageRecord(*row) if row else None


def _reactions_of(db: sqlite3.Connection, change: MessageChange) -> list[ReactionCount]:
    rows = db.execute(REACTION_COUNTS.format(marks="?"), (change.user_id, change.message_id))
    return counted(rows.fetchall()).get(change.message_id, [])


def _optimize_search_index(db: sqlite3.Connection) -> None:
    """Merge the FTS5 index into one segment: the words of deleted texts leave it."""
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")


def _failure(exc: Exception) -> StoreError:
    """A failed read or write: another process holding the file is a passing outage."""
    if getattr(exc, "sqlite_errorcode", None) in _BUSY_CODES:
        return UnavailableError("the database file is locked by another process")
    return StoreError(str(exc))


def _refusal(exc: sqlite3.IntegrityError) -> StoreError:
    """A broken rule, named by SQLite's extended result code (never by the error text)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in _UNIQUE_CODES:
        return DuplicateError("already stored")
    if code == _FOREIGN_KEY_CODE:
        return NotFoundError("refers to something not stored")
    return StoreError(str(exc))

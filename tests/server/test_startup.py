"""Start-up as an operator meets it: a database that cannot be used is one sentence, exit 1.

Every case runs the real ``clubroom-server`` command and checks that it ends
with ONE line naming the database and what to do, a non-zero exit and no
traceback, and that the file was not changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from clubroom_server.store import open_store
from tests.pginstance import PASSWORD, OwnPostgres, private_postgres

__all__ = ["private_postgres"]  # the fixture


def clubroom_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clubroom_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def refused_in_one_sentence(*args: str) -> str:
    """Run the command; it must fail with exactly one line and no traceback."""
    result = clubroom_server(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def serve_refuses(db: str | Path) -> str:
    return refused_in_one_sentence("serve", "--port", "0", "--db", str(db))


def make_clubroom_db(path: Path, filler_rows: int = 0) -> None:
    """A real Clubroom database (made by ``migrate``), optionally grown by some rows."""
    assert clubroom_server("migrate", "--db", str(path)).returncode == 0
    if filler_rows:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.executemany(
                "INSERT INTO users (username, key, password_hash, created_ms) VALUES (?, ?, ?, 0)",
                [(f"u{n}", f"u{n}", "x" * 200) for n in range(filler_rows)],
            )


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    """A file that is not SQLite at all: named, with what to do; left untouched."""
    db = tmp_path / "notes.db"
    db.write_bytes(b"my shopping list\n" * 100)
    line = serve_refuses(db)
    assert str(db) in line and "not a SQLite database" in line and "--db" in line
    assert db.read_bytes() == b"my shopping list\n" * 100


def test_truncated_database_is_refused(tmp_path: Path) -> None:
    """A database cut short (a partial copy) is refused before anything reads it."""
    db = tmp_path / "clubroom.db"
    make_clubroom_db(db, filler_rows=2000)
    size = db.stat().st_size
    with db.open("r+b") as file:
        file.truncate(size // 2)
    line = serve_refuses(db)
    assert str(db) in line and "truncated" in line and "backup" in line


def test_another_applications_sqlite_file_is_refused(tmp_path: Path) -> None:
    """A SQLite file of some other program is never opened as Clubroom's."""
    db = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    line = serve_refuses(db)
    assert str(db) in line and "not a Clubroom database" in line
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database from a newer Clubroom (user_version 99) is never opened."""
    db = tmp_path / "future.db"
    make_clubroom_db(db)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version=99")
    line = serve_refuses(db)
    assert str(db) in line and "schema version 99" in line and "upgrade Clubroom" in line


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` read-only, even for root (immutable), and writable again after."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    """A database in a folder the server cannot write: one sentence saying so."""
    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder):
        line = serve_refuses(folder / "clubroom.db")
    assert str(folder / "clubroom.db") in line and "writable" in line


def test_unreachable_postgres_is_refused_without_the_password() -> None:
    """Nobody listening: host and database are named, the password never is."""
    line = serve_refuses("postgresql://clubroom:s3cret-pw@127.0.0.1:1/chat")
    assert "'chat' on 127.0.0.1:1" in line and "s3cret-pw" not in line


def test_rejected_postgres_login_is_refused_without_the_password(
    private_postgres: OwnPostgres,
) -> None:
    """A wrong password: the server says whose login was refused where, not the password."""
    line = serve_refuses(private_postgres.url(password="wrong-pw-123"))
    assert f"127.0.0.1:{private_postgres.port}" in line and "'postgres'" in line
    assert "wrong-pw-123" not in line and PASSWORD not in line


def test_unknown_database_url_is_refused() -> None:
    """A --db URL of a kind Clubroom does not speak is named as such."""
    line = serve_refuses("mysql://root@localhost/chat")
    assert "mysql://" in line and "postgresql://" in line


async def test_database_folder_and_files_are_private(tmp_path: Path) -> None:
    """A new database's folder is 0700 and its file, -wal and -shm are 0600."""
    folder = tmp_path / "new" / "data"
    store = await open_store(folder / "clubroom.db")
    try:
        await store.add_user("ann", "ann", "$argon2id$x", 0)
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in folder.iterdir()
            if path.name.startswith("clubroom.db")
        }
    finally:
        await store.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert modes == {"clubroom.db": 0o600, "clubroom.db-wal": 0o600, "clubroom.db-shm": 0o600}


def test_migrate_brings_a_first_schema_file_up_to_date(tmp_path: Path) -> None:
    """migrate applies pending migrations and says so; the data is kept."""
    db = tmp_path / "old.db"
    from clubroom_server.store import migrations

    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(f"BEGIN;{migrations.scripts('sqlite')[0]};PRAGMA user_version=1;COMMIT;")
    result = clubroom_server("migrate", "--db", f"sqlite:///{db}")
    assert result.returncode == 0 and "up to date" in result.stdout
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2


async def test_copy_moves_a_deployment_to_postgres_and_refuses_a_filled_target(
    tmp_path: Path,
) -> None:
    """copy --from sqlite --to postgresql keeps everything; a second copy is refused."""
    from tests.databases import fresh_postgres

    source = tmp_path / "chat.db"
    store = await open_store(source)
    ann = await store.add_user("ann", "ann", "$argon2id$x", 0)
    room = await store.add_room("Lobby", "lobby", 0)
    for n in range(3):
        await store.append_message(room.id, ann.id, "ann", f"m{n}", 0)
    await store.close()
    async with fresh_postgres() as target:
        copy = ("copy", "--from", str(source), "--to", target)
        result = await asyncio.to_thread(clubroom_server, *copy)
        assert result.returncode == 0, result.stderr
        assert "Copied 1 users, 0 tokens, 1 rooms, 3 messages" in result.stdout
        line = await asyncio.to_thread(refused_in_one_sentence, *copy)
        assert "already holds data" in line


async def test_serve_on_postgres_chats_and_keeps_it_across_a_restart() -> None:
    """serve --db postgresql://…: a real chat, SIGTERM exits 0, the restart has the history."""
    from tests.databases import fresh_postgres
    from tests.server.serverprocess import ServerProcess
    from tests.wsclient import WireClient, user

    cheap = ("--port", "0", "--argon2-profile", "cheapest")
    async with fresh_postgres() as url:
        server = await ServerProcess.start(*cheap, "--db", url)
        assert any("PostgreSQL database" in line for line in server.output)
        ann = await user(server.url, "ann")
        await ann.ok("create_room", room="Lobby")
        sent = await ann.ok("send", room="Lobby", text="stored in PostgreSQL")
        assert await server.terminate() == 0
        assert await ann.wait_closed() == 1001
        again = await ServerProcess.start(*cheap, "--db", url)
        client = await WireClient.open(again.url)
        await client.ok("resume", token=ann.token)
        joined = await client.ok("join_room", room="Lobby")
        assert joined["messages"] == [sent["message"]]
        await client.close()
        assert await again.terminate() == 0
        assert "Traceback" not in "".join(server.output + again.output)

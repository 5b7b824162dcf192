"""A PostgreSQL server of the test's own, to stop and start at will.

Tests that take the database away must never touch the machine's shared
server: they start their own with ``initdb`` / ``pg_ctl`` on a free port, in a
folder of their own, with password (SCRAM) authentication so that a rejected
login can be tested too. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.databases import fresh_postgres
from tests.services import POSTGRES_VAR, unusable

BIN = Path(os.environ.get("CLUBROOM_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "own-instance-secret-7f3a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnPostgres:
    """initdb'd into a private folder; ``start``/``stop`` as often as a test likes."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            unusable(f"this test starts its own PostgreSQL and needs {BIN}/initdb")
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="clubroom-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        if self._as_root:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.folder, postgres.pw_uid, postgres.pw_gid)
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD)
        if self._as_root:
            os.chown(password_file, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--no-sync",
        )

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    @contextlib.asynccontextmanager
    async def fresh_database(self) -> AsyncIterator[str]:
        """The URL of a new database on this server, dropped afterwards."""
        async with fresh_postgres(self.url()) as url:
            yield url

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Take the server away; ``immediate`` is a crash, ``fast`` an orderly shutdown."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(BIN / program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_root else command

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            self._command(program, *args), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {result.stderr}{result.stdout}\n{log}")


def own_postgres() -> OwnPostgres:
    """Start a private PostgreSQL (fails or skips like the other service tests)."""
    if not os.environ.get(POSTGRES_VAR):
        unusable(f"PostgreSQL tests need {POSTGRES_VAR} (e.g. set by .ci/run); it is not set")
    instance = OwnPostgres()
    try:
        instance.start()
    except BaseException:
        instance.destroy()
        raise
    return instance


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[OwnPostgres]:
    """One private PostgreSQL per test module, destroyed at the end."""
    instance = own_postgres()
    yield instance
    instance.destroy()

"""Structured logs: JSON lines with context, and never a secret, from a real server process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from pathlib import Path

from clubroom_server import logs
from tests.cluster.harness import bus_prefix
from tests.pginstance import PASSWORD as PG_PASSWORD
from tests.pginstance import OwnPostgres, private_postgres
from tests.server.serverprocess import ServerProcess
from tests.services import redis_url
from tests.waiting import wait_until
from tests.wsclient import PASSWORD, WireClient, resumed, user

__all__ = ["private_postgres"]  # the fixture

CHEAP = ("--argon2-profile", "cheapest")
SECRET_TEXT = "the-launch-code-is-0000"


async def test_json_debug_logs_parse_carry_context_and_hold_no_secret(tmp_path: Path) -> None:
    """At DEBUG in JSON, every output line is an object with the fields, and no secret appears."""
    db = tmp_path / "c.db"
    server = await ServerProcess.start(
        "--port", "0", "--db", str(db), *CHEAP, "--log-format", "json", "--log-level", "DEBUG"
    )
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Vault")
    await ann.ok("send", room="Vault", text=SECRET_TEXT)
    again = await resumed(server.url, ann.token)
    stranger = await WireClient.open(server.url)
    await stranger.call("login", username="ann", password="Wrong-guess-42!")
    await stranger.call("resume", token=ann.token[::-1])
    for client in (ann, again, stranger):
        await client.close()
    assert await server.terminate() == 0
    with sqlite3.connect(db) as conn:
        (password_hash,) = conn.execute("SELECT password_hash FROM users").fetchone()
        (token_hash,) = conn.execute("SELECT hash FROM tokens").fetchone()

    entries = [json.loads(line) for line in server.output if line.strip()]
    assert all({"time", "level", "logger", "event", "node"} <= entry.keys() for entry in entries)
    assert any(e["level"] == "DEBUG" and e.get("connection") for e in entries), "context is set"
    assert any(e.get("user") == "ann" for e in entries), "the user is named once logged in"
    output = "".join(server.output)
    secrets = [PASSWORD, "Wrong-guess-42!", ann.token, ann.token[::-1], SECRET_TEXT]
    secrets += [password_hash, password_hash.split("$")[-1], token_hash]
    for secret in secrets:
        assert secret not in output


async def test_a_cluster_node_at_debug_never_logs_the_database_password(
    private_postgres: OwnPostgres,
) -> None:
    """PostgreSQL with a password in --db, a bus, DEBUG JSON, an outage of the database: the
    password appears in no line, though the database is named."""
    async with private_postgres.fresh_database() as db:
        assert PG_PASSWORD in db
        server = await ServerProcess.start(
            "--port", "0", "--db", db, "--bus", redis_url(), "--bus-prefix", bus_prefix(),
            *CHEAP, "--log-format", "json", "--log-level", "DEBUG", "--node-lease", "1",
        )  # fmt: skip
        try:
            ann = await user(server.url, "ann")
            await ann.ok("create_room", room="Vault")
            await ann.ok("send", room="Vault", text=SECRET_TEXT)
            await asyncio.to_thread(private_postgres.stop, "immediate")
            try:
                assert (await ann.call("send", room="Vault", text="x"))["code"] == "unavailable"
                await wait_until(lambda: "unreachable" in "".join(server.output), within=20)
            finally:
                await asyncio.to_thread(private_postgres.start)
            await ann.close()
        finally:
            assert await server.terminate() == 0
    output = "".join(server.output)
    entries = [json.loads(line) for line in server.output if line.strip()]
    assert entries and all("event" in entry for entry in entries)
    assert f"127.0.0.1:{private_postgres.port}" in output, "the database is named"
    for secret in (PG_PASSWORD, PASSWORD, SECRET_TEXT, ann.token):
        assert secret not in output


async def test_text_logs_name_the_connection_and_user(tmp_path: Path) -> None:
    """Text lines carry the same context in brackets, after the logger name."""
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP, "--log-level", "DEBUG"
    )
    ann = await user(server.url, "ann")
    await ann.close()
    assert await server.terminate() == 0
    assert any("user=ann]" in line and "connection=c" in line for line in server.output)


def test_configure_replaces_its_handler_and_keeps_libraries_quiet() -> None:
    """Configuring again (a reload) does not double lines; websockets never logs frames."""
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        logs.configure("DEBUG", "json", node="n1", stream=stream)
        logs.configure("DEBUG", "json", node="n1", stream=stream)
        logging.getLogger("clubroom_server.test").info("hello %s", "there")
        logging.getLogger(logs.WEBSOCKETS_LOGGER).debug("> TEXT '{\"password\": ...}'")
        lines = stream.getvalue().splitlines()
        assert [json.loads(line)["event"] for line in lines] == ["hello there"]
        assert json.loads(lines[0])["node"] == "n1"
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])

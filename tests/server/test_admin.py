"""The admin commands, run as an operator runs them, against a live server (either backend)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from tests.admincli import admin, admin_ok
from tests.cluster.harness import ProcessCluster
from tests.conftest import RunningServer
from tests.databases import database_url, fresh_postgres
from tests.server.serverprocess import ServerProcess
from tests.services import redis_url
from tests.wsclient import PASSWORD, WireClient, in_room, resumed, user

NEW_PASSWORD = "a-brand-new-secret-9"


def db_of(server: RunningServer) -> tuple[str, str]:
    return ("--db", str(server.settings.db))


async def closed_within(client: WireClient, seconds: float) -> int | None:
    """The close code, asserting the server closed the connection in time."""
    started = time.monotonic()
    code = await client.wait_closed()
    assert time.monotonic() - started < seconds
    return code


async def test_users_list_and_show_describe_accounts_without_secrets(server: RunningServer) -> None:
    """list (text and JSON) and show give status, role and sessions; never a hash."""
    ann = await user(server.url, "ann")
    await user(server.url, "bob")
    await admin_ok("users", "grant-admin", "ann", *db_of(server))
    listed = json.loads(await admin_ok("users", "list", "--json", *db_of(server)))
    assert [(u["username"], u["status"], u["admin"], u["sessions"]) for u in listed] == [
        ("ann", "active", True, 1),
        ("bob", "active", False, 1),
    ]
    text = await admin_ok("users", "list", *db_of(server))
    assert text.splitlines()[0].split() == ["USER", "STATUS", "ROLE", "SESSIONS", "CREATED"]
    shown = await admin_ok("users", "show", "ANN", *db_of(server))
    fields = dict(line.split(":", 1) for line in shown.splitlines())
    assert (fields["username"].strip(), fields["admin"].strip()) == ("ann", "yes")
    for output in (text, shown, json.dumps(listed)):
        assert "$argon2" not in output and ann.token not in output
    code, out = await admin("users", "show", "nobody", *db_of(server))
    assert code == 1 and "There is no user called 'nobody'" in out


async def test_disable_closes_connections_at_once_and_enable_restores(
    server: RunningServer,
) -> None:
    """A disabled user is cut off (4001) within a second, leaves rooms, and cannot log in."""
    ann = await user(server.url, "ann")
    other_tab = await resumed(server.url, ann.token)
    bob = await user(server.url, "bob")
    await in_room([bob, ann])
    assert "is now disabled" in await admin_ok("users", "disable", "ann", *db_of(server))
    assert await closed_within(ann, 2.5) == 4001
    assert await other_tab.wait_closed() == 4001
    left = await bob.event("member_left")
    assert left["username"] == "ann"
    again = await WireClient.open(server.url)
    assert (await again.call("login", username="ann", password=PASSWORD))["code"] == (
        "invalid_credentials"
    )
    assert (await again.call("resume", token=ann.token))["code"] == "invalid_token"
    assert "enabled again" in await admin_ok("users", "enable", "ann", *db_of(server))
    assert (await again.call("login", username="ann", password=PASSWORD))["type"] == "welcome"
    await again.close()
    await bob.close()


async def test_reset_password_ends_sessions_and_checks_the_rules(server: RunningServer) -> None:
    """The new password works, the old one and old sessions do not; a weak one is refused."""
    ann = await user(server.url, "ann")
    reset = ("users", "reset-password", "ann", "--password-stdin", *db_of(server))
    code, out = await admin(*reset, stdin="short\n")
    assert code == 1 and "too short" in out
    await admin_ok(*reset, "--argon2-profile", "cheapest", stdin=NEW_PASSWORD + "\n")
    assert await closed_within(ann, 2.5) == 4001
    client = await WireClient.open(server.url)
    assert (await client.call("login", username="ann", password=PASSWORD))["type"] == "error"
    assert (await client.call("login", username="ann", password=NEW_PASSWORD))["type"] == "welcome"
    await client.close()


async def test_sessions_revoke_logs_a_user_out_everywhere(server: RunningServer) -> None:
    """Every token ends and every connection closes; the password still works."""
    ann = await user(server.url, "ann")
    out = await admin_ok("sessions", "revoke", "ann", *db_of(server))
    assert "1 session(s) ended" in out
    assert await closed_within(ann, 2.5) == 4001
    client = await WireClient.open(server.url)
    assert (await client.call("resume", token=ann.token))["code"] == "invalid_token"
    assert (await client.call("login", username="ann", password=PASSWORD))["type"] == "welcome"
    await client.close()


async def test_delete_user_needs_confirmation_and_keeps_the_name_reserved(
    server: RunningServer,
) -> None:
    """Without --yes nothing happens; with it the account is gone and its name stays taken."""
    ann = await user(server.url, "ann")
    bob = await user(server.url, "bob")
    await in_room([ann, bob])  # bob keeps the room (and ann's words) alive
    await ann.ok("send", room="Lobby", text="my words")
    code, out = await admin("users", "delete", "ann", *db_of(server))
    assert code == 1 and "1 message(s) stay in their rooms" in out and "Aborted" in out
    assert "is deleted" in await admin_ok("users", "delete", "ann", "--yes", *db_of(server))
    assert await closed_within(ann, 2.5) == 4001
    client = await WireClient.open(server.url)
    assert (await client.call("login", username="ann", password=PASSWORD))["type"] == "error"
    reply = await client.call("register", username="ann", password=PASSWORD)
    assert reply["code"] == "username_taken"
    shown = json.loads(await admin_ok("users", "show", "ann", "--json", *db_of(server)))
    assert (shown["status"], shown["messages"]) == ("deleted", 1)
    code, out = await admin("users", "enable", "ann", *db_of(server))
    assert code == 1 and "cannot return" in out
    history = await bob.ok("history", room="Lobby", before=10**9)
    assert [m["text"] for m in history["messages"]] == ["my words"]
    for each in (client, bob):
        await each.close()


async def test_deleting_a_room_tells_its_members_and_frees_the_name(server: RunningServer) -> None:
    """Members get room_deleted within a second; the name can be used again at once."""
    ann = await user(server.url, "ann")
    bob = await user(server.url, "bob")
    await in_room([ann, bob])
    await ann.ok("send", room="Lobby", text="soon gone")
    rooms = json.loads(await admin_ok("rooms", "list", "--json", *db_of(server)))
    assert [(r["room"], r["messages"]) for r in rooms] == [("Lobby", 1)]
    code, out = await admin("rooms", "delete", "lobby", *db_of(server))
    assert code == 1 and "its 1 message(s)" in out
    await admin_ok("rooms", "delete", "lobby", "--yes", *db_of(server))
    for client in (ann, bob):
        assert await client.unmatched() == {"type": "room_deleted", "room": "Lobby"}
    assert (await bob.call("send", room="Lobby", text="x"))["code"] == "not_in_room"
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"
    await bob.ok("create_room", room="Lobby")
    assert (
        json.loads(await admin_ok("rooms", "show", "Lobby", "--json", *db_of(server)))["messages"]
        == 0
    )
    for client in (ann, bob):
        await client.close()


async def test_check_accepts_a_healthy_database_and_names_a_broken_one(
    server: RunningServer,
) -> None:
    """check says ok (exit 0) with counts, and exits 1 naming what is wrong."""
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    await ann.ok("send", room="Lobby", text="one")
    report = json.loads(await admin_ok("check", "--json", *db_of(server)))
    assert report["ok"] and report["counts"]["messages"] == 1
    assert report["schema_version"] == report["latest_version"]
    await ann.close()
    await server.stop()
    await server.rows("UPDATE rooms SET last_seq = 5")
    code, out = await admin("check", *db_of(server))
    assert code == 1 and "PROBLEM: room 'Lobby': message sequence has gaps" in out


async def test_backup_during_a_burst_restores_every_acknowledged_message(tmp_path: Path) -> None:
    """A backup taken while clients write is consistent and holds all acked before it began."""
    db = tmp_path / "server.db"
    server = await ServerProcess.start(
        "--port", "0", "--db", str(db), "--argon2-profile", "cheapest", "--rate-limit", "0"
    )
    clients = [await user(server.url, f"user{n}") for n in range(4)]
    await in_room(clients)
    acked: list[int] = []
    stop = asyncio.Event()
    under_way = asyncio.Event()

    async def chat(client: WireClient) -> None:
        n = 0
        while not stop.is_set():
            reply = await client.ok("send", room="Lobby", text=f"{client.username} {n}")
            acked.append(reply["message"]["id"])
            if len(acked) >= 50:
                under_way.set()
            n += 1

    writers = [asyncio.create_task(chat(c)) for c in clients]
    await asyncio.wait_for(under_way.wait(), 20)
    before_backup = list(acked)
    out = await admin_ok("backup", str(tmp_path / "copy.db"), "--db", str(db))
    stop.set()
    await asyncio.gather(*writers)
    assert "passes `check`" in out
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600
    assert "ok" in await admin_ok("check", "--db", str(tmp_path / "copy.db"))
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        stored = {row[0] for row in copy.execute("SELECT id FROM messages")}
    assert set(before_backup) <= stored
    code, out = await admin("backup", str(tmp_path / "copy.db"), "--db", str(db))
    assert code == 1 and "already exists" in out
    assert await server.terminate() == 0
    restored = await ServerProcess.start("--port", "0", "--db", str(tmp_path / "copy.db"))
    assert await restored.terminate() == 0


async def test_backup_into_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    """A backup path whose folder does not exist is refused naming it; nothing is written."""
    server = await ServerProcess.start("--port", "0", "--db", str(tmp_path / "c.db"))
    target = tmp_path / "backups" / "today.db"
    code, out = await admin("backup", str(target), "--db", str(tmp_path / "c.db"))
    assert await server.terminate() == 0
    assert code == 1 and f"The folder {target.parent} does not exist" in out, out
    assert not target.parent.exists()


async def test_backup_on_postgresql_explains_pg_dump(tmp_path: Path) -> None:
    """PostgreSQL is backed up with pg_dump: the command says how, and fails (exit 1)."""
    async with database_url("postgres", tmp_path) as url:
        code, out = await admin("backup", str(tmp_path / "x.dump"), "--db", url)
    assert code == 1 and "pg_dump --format=custom" in out and "pg_restore" in out
    assert not (tmp_path / "x.dump").exists()


async def test_admin_commands_read_the_database_from_the_config_file(tmp_path: Path) -> None:
    """--config gives the admin commands the server's own database."""
    config = tmp_path / "clubroom.toml"
    config.write_text('db = "chat.db"\nport = 0\nargon2-profile = "cheapest"\n')
    server = await ServerProcess.start("--config", str(config))
    await (await user(server.url, "ann")).close()
    listed = json.loads(await admin_ok("users", "list", "--json", "--config", str(config)))
    assert [u["username"] for u in listed] == ["ann"]
    assert await server.terminate() == 0


async def test_copy_carries_admin_roles_and_account_states(
    server: RunningServer, tmp_path: Path
) -> None:
    """After `copy` to another database, roles and disabled/deleted states are as they were."""
    for name in ("ann", "bob", "cyd"):
        await (await user(server.url, name)).close()
    await admin_ok("users", "grant-admin", "ann", *db_of(server))
    await admin_ok("users", "disable", "bob", *db_of(server))
    await admin_ok("users", "delete", "cyd", "--yes", *db_of(server))
    await server.stop()
    target = f"sqlite:///{tmp_path}/copy.db"
    await admin_ok("copy", "--from", str(server.settings.db), "--to", target)
    listed = json.loads(await admin_ok("users", "list", "--json", "--db", target))
    assert [(u["username"], u["status"], u["admin"]) for u in listed] == [
        ("ann", "active", True),
        ("bob", "disabled", False),
        ("cyd", "deleted", False),
    ]


async def test_admin_actions_reach_every_node_process_of_a_cluster() -> None:
    """Two ``serve`` processes on one database and Redis, the CLI a third: disabling a user
    closes their connections on both nodes; deleting a room tells members on both."""
    async with fresh_postgres() as db:
        cluster = ProcessCluster(db, redis_url(), ("--rate-limit", "0"), nodes=2)
        await cluster.start()
        try:
            ann = await user(cluster.url(0), "ann")
            ann_elsewhere = await resumed(cluster.url(1), ann.token)
            bob, cat = await user(cluster.url(0), "bob"), await user(cluster.url(1), "cat")
            await in_room([bob, cat, ann_elsewhere])
            await admin_ok("users", "disable", "ann", "--db", db)
            assert await closed_within(ann, 2.5) == 4001
            assert await closed_within(ann_elsewhere, 2.5) == 4001
            for member in (bob, cat):
                assert (await member.event("member_left"))["username"] == "ann"
            await admin_ok("rooms", "delete", "Lobby", "--yes", "--db", db)
            for member in (bob, cat):
                assert await member.unmatched() == {"type": "room_deleted", "room": "Lobby"}
            await cat.ok("create_room", room="Lobby")  # the name is free on every node
            await bob.ok("join_room", room="Lobby")
            for client in (bob, cat):
                await client.close()
        finally:
            await cluster.stop()

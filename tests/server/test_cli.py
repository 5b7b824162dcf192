"""``clubroom-server serve`` as an operator runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from protocol import FORWARDED_FOR_HEADER as FORWARDED
from tests.admincli import admin_ok
from tests.server.serverprocess import ServerProcess
from tests.wsclient import PASSWORD, WireClient, user

CHEAP = ("--argon2-profile", "cheapest")


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def test_serve_prints_url_answers_health_and_stops_cleanly(tmp_path: Path) -> None:
    """serve prints its ws:// URL, /healthz says ok, and SIGTERM exits 0 closing clients 1012."""
    server = await ServerProcess.start("--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP)
    assert server.url.startswith("ws://127.0.0.1:")
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/healthz")
    assert (status, body) == (200, "ok")
    client = await user(server.url, "ann")
    assert await server.terminate() == 0
    assert await client.wait_closed() == 1012
    assert "Traceback" not in "".join(server.output)


async def test_default_database_lives_in_the_user_data_directory(tmp_path: Path) -> None:
    """Without --db the database is created, folders and all, under the data directory."""
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    server = await ServerProcess.start("--port", "0", *CHEAP, env=env)
    client = await user(server.url, "ann")
    await client.close()
    assert await server.terminate() == 0
    assert (tmp_path / "data" / "clubroom" / "clubroom.db").is_file()


async def test_options_can_come_from_the_environment(tmp_path: Path) -> None:
    """CLUBROOM_* variables set the options (here the database and the frame limit)."""
    env = {
        "CLUBROOM_DB": str(tmp_path / "env.db"),
        "CLUBROOM_MAX_FRAME": "1024",
        "CLUBROOM_ARGON2_PROFILE": "cheapest",
        "CLUBROOM_PORT": "0",
    }
    server = await ServerProcess.start(env=env)
    client = await WireClient.open(server.url)
    await client.ws.send('{"type": "logout", "pad": "' + "x" * 2000 + '"}')
    assert await client.wait_closed() == 1009
    assert await server.terminate() == 0
    assert (tmp_path / "env.db").is_file()


async def test_acknowledged_messages_survive_sigterm_and_restart(tmp_path: Path) -> None:
    """Every message answered with sent before a SIGTERM is there after a restart."""
    db = str(tmp_path / "c.db")
    server = await ServerProcess.start("--port", "0", "--db", db, "--rate-limit", "0", *CHEAP)
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    acked = [(await ann.ok("send", room="Lobby", text=f"m{n}"))["message"] for n in range(30)]
    assert await server.terminate() == 0
    server = await ServerProcess.start("--port", "0", "--db", db, *CHEAP)
    again = await WireClient.open(server.url)
    await again.ok("login", username="ann", password=PASSWORD)
    joined = await again.ok("join_room", room="Lobby", after=0)
    assert joined["messages"] == acked
    await again.close()
    assert await server.terminate() == 0


async def test_plain_clients_without_subprotocol_are_accepted(tmp_path: Path) -> None:
    """A client offering no subprotocol is served; one offering clubroom.v1 gets it selected."""
    server = await ServerProcess.start("--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP)
    plain = await WireClient.open(server.url, subprotocols=None)
    assert plain.ws.subprotocol is None
    assert (await plain.call("logout"))["type"] == "ok"
    named = await WireClient.open(server.url)
    assert named.ws.subprotocol == "clubroom.v1"
    await plain.close()
    await named.close()
    assert await server.terminate() == 0


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """Starting on a taken port fails with a sentence, not a traceback."""
    first = await ServerProcess.start("--port", "0", "--db", str(tmp_path / "a.db"), *CHEAP)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clubroom_server",
        "serve",
        "--port",
        str(first.port),
        "--db",
        str(tmp_path / "b.db"),
        *CHEAP,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode != 0
    assert b"Could not start the server" in out and b"Traceback" not in out
    assert await first.terminate() == 0


async def test_sigterm_during_traffic_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """SIGTERM while many clients send: what was acknowledged is stored, clients get 1012."""
    db = tmp_path / "c.db"
    server = await ServerProcess.start("--port", "0", "--db", str(db), "--rate-limit", "0", *CHEAP)
    clients = [await user(server.url, f"user{n}") for n in range(8)]
    await clients[0].ok("create_room", room="Lobby")
    for client in clients[1:]:
        await client.ok("join_room", room="Lobby")
    acked: list[int] = []

    async def chat(client: WireClient) -> None:
        for n in range(1000):
            reply = await client.call("send", room="Lobby", text=f"{n}")
            if reply["type"] != "sent":
                return
            acked.append(reply["message"]["id"])

    tasks = [asyncio.create_task(chat(c)) for c in clients]
    await asyncio.sleep(0.5)
    assert await server.terminate() == 0
    await asyncio.gather(*tasks, return_exceptions=True)
    codes = {await c.wait_closed() for c in clients}
    assert codes == {1012}
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM messages")}
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert acked and set(acked) <= stored


async def test_origins_and_proxies_come_from_options_and_environment(tmp_path: Path) -> None:
    """--allowed-origin repeats; CLUBROOM_TRUSTED_PROXY takes a comma/space separated list."""
    env = {"CLUBROOM_TRUSTED_PROXY": "10.0.0.0/8, 127.0.0.1"}
    server = await ServerProcess.start(
        *("--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP),
        *("--allowed-origin", "https://a.example", "--allowed-origin", "https://b.example"),
        *("--login-failures-per-address", "1", "--login-failures-per-user", "0"),
        env=env,
    )
    for origin in ("https://a.example", "https://b.example"):
        client = await WireClient.open(server.url, origin=origin)
        await client.close()
    with pytest.raises(InvalidStatus):
        await ws_connect(server.url, origin="https://c.example")
    for forwarded in ("192.0.2.1", "192.0.2.2"):  # each visitor gets their own budget
        visitor = await WireClient.open(server.url, additional_headers={FORWARDED: forwarded})
        reply = await visitor.call("login", username="nobody", password=PASSWORD)
        assert reply["code"] == "invalid_credentials"
        await visitor.close()
    assert await server.terminate() == 0


async def test_a_bad_trusted_proxy_is_a_clear_error(tmp_path: Path) -> None:
    """A --trusted-proxy that is no address or CIDR stops start-up with a sentence."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "clubroom_server", "serve", "--trusted-proxy", "proxy.lan"),
        *("--db", str(tmp_path / "c.db")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 2
    assert b"not an IP address or CIDR block" in out and b"Traceback" not in out


@pytest.mark.parametrize("how", ["--config", "CLUBROOM_CONFIG"])
async def test_migrate_finds_the_database_in_the_config_file(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like every admin command, migrate opens the config file's db, never a stray default."""
    config = tmp_path / "etc" / "clubroom.toml"
    config.parent.mkdir()
    config.write_text(f'db = "{tmp_path / "state" / "chat.db"}"\n')
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLUBROOM_DB", raising=False)
    args: tuple[str, ...] = ("--config", str(config))
    if how == "CLUBROOM_CONFIG":
        monkeypatch.setenv("CLUBROOM_CONFIG", str(config))
        args = ()
    out = await admin_ok("migrate", *args)
    assert str(tmp_path / "state" / "chat.db") in out
    assert (tmp_path / "state" / "chat.db").is_file()
    assert not (tmp_path / "data").exists() and not (tmp_path / "home").exists()

"""Defences against hostile clients: each test fails if its defence is switched off."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import ssl
import threading
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from tests.conftest import MakeServer, RunningServer
from tests.server.conftest import Connect
from tests.waiting import wait_until
from tests.wsclient import PASSWORD, WireClient, user


async def test_tls_serves_wss_with_a_private_ca(make_server: MakeServer, tmp_path: Path) -> None:
    """With a certificate the server speaks wss://, trusted through the CA that issued it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    server = await make_server(certfile=cert_path, keyfile=key_path)
    assert server.app is not None and server.app.url.startswith("wss://")
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    url = f"wss://127.0.0.1:{server.port}"
    client = await WireClient.open(url, ssl=trusting)
    assert (await client.register("ann"))["type"] == "welcome"
    await client.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await ws_connect(url, ssl=ssl.create_default_context())


async def test_slow_consumer_is_closed_and_others_are_unaffected(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stops reading is closed with 4008 once its buffer passes the limit."""
    server = await make_server(rate_limit=0, send_buffer_limit=64 * 1024)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow = WireClient(await ws_connect(server.url, sock=sock, max_size=None))
    await slow.register("slow")
    ann = await user(server.url, "ann")
    reader = await user(server.url, "reader")
    await ann.ok("create_room", room="Flood")
    await slow.ok("join_room", room="Flood")
    await reader.ok("join_room", room="Flood")
    slow.ws.transport.pause_reading()
    sent = 0
    while "slow consumer" not in caplog.text and sent < 5000:  # kernel buffers hold MBs
        await ann.ok("send", room="Flood", text=f"{sent:04d}" + "x" * 3990)
        sent += 1
    assert "slow consumer" in caplog.text
    received = [(await reader.event("message"))["message"]["text"][:4] for _ in range(sent)]
    assert received == [f"{n:04d}" for n in range(sent)], "the reading client got everything"
    slow.ws.transport.resume_reading()
    assert await slow.wait_closed() == 4008
    assert (await ann.ok("send", room="Flood", text="still fine"))["type"] == "sent"
    for client in (ann, reader):
        await client.close()


@pytest.mark.single_process  # the cap is per node: each node protects itself
async def test_connections_per_address_are_capped(make_server: MakeServer) -> None:
    """Past the cap, a new connection from the same address is refused with HTTP 429."""
    server = await make_server(max_connections_per_address=3)
    clients = [await WireClient.open(server.url) for _ in range(3)]
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(server.url)
    assert refused.value.response.status_code == 429
    await clients[0].close()
    await asyncio.sleep(0.1)
    again = await WireClient.open(server.url)
    assert (await again.call("logout"))["type"] == "ok"
    for client in [*clients[1:], again]:
        await client.close()


async def test_a_stalled_handshake_is_dropped(make_server: MakeServer) -> None:
    """A TCP connection that never finishes the handshake is closed after the timeout."""
    server = await make_server(handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()


async def test_a_connection_idle_without_login_is_closed(make_server: MakeServer) -> None:
    """A connection that does not authenticate within the idle timeout is closed with 4000."""
    server = await make_server(idle_timeout=0.3)
    idle = await WireClient.open(server.url)
    active = await user(server.url, "ann")
    assert await idle.wait_closed() == 4000
    await asyncio.sleep(0.4)
    assert (await active.call("create_room", room="Awake"))["type"] == "joined"
    await active.close()


async def test_compression_is_never_negotiated(server: RunningServer) -> None:
    """A client offering permessage-deflate gets plain frames: no decompression bombs."""
    client = await WireClient.open(server.url, compression="deflate")
    assert client.ws.protocol.extensions == []
    assert "Sec-WebSocket-Extensions" not in client.ws.response.headers
    await client.close()


@pytest.mark.sqlite_only
async def test_deleted_room_text_is_gone_from_the_database_files(
    connect: Connect, server: RunningServer
) -> None:
    """After the last leave, the messages' text cannot be found in clubroom.db*."""
    secret = b"UNMISTAKABLE-SECRET-PLAN"
    ann = await connect("ann")
    await ann.ok("create_room", room="Plots")
    for _ in range(8):
        await ann.ok("send", room="Plots", text=secret.decode())

    def files_mention_secret() -> bool:
        return any(
            secret in path.read_bytes()
            for path in server.db_path.parent.glob(server.db_path.name + "*")
        )

    assert files_mention_secret(), "the text is on disk while the room exists"
    await ann.ok("leave_room", room="Plots")
    await wait_until(lambda: not files_mention_secret())


async def test_no_secret_reaches_a_log_line_or_an_error(
    connect: Connect, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, no password, token or hash appears in any log line or error frame."""
    caplog.set_level(logging.DEBUG)
    ann = await connect("ann")
    other = await connect()
    frames = [
        await other.call("login", username="ann", password="Wrong-guess-42!"),
        await other.call("register", username="bob", password="bob-is-weak"),
        await other.call("resume", token=ann.token[::-1]),
        await other.call("login", username="ann", password=PASSWORD),
        await other.call("logout"),
    ]
    await ann.ok("create_room", room="Quiet")
    await ann.ok("logout")
    hashes = [row[0] for row in await server.rows("SELECT password_hash FROM users")]
    secrets = [PASSWORD, "Wrong-guess-42!", "bob-is-weak", ann.token, ann.token[::-1], *hashes]
    secrets += [h.split("$")[-1] for h in hashes]  # the raw digest part alone
    # The test's own client library logs its frames; only the server's lines count.
    server_records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    logged = "\n".join(record.getMessage() for record in server_records)
    assert "registered user ann" in logged, "the server's logging was captured"
    replies = json.dumps(frames)
    for secret in secrets:
        assert secret not in logged
        assert secret not in replies


async def test_default_argon2_meets_rfc9106_second_recommendation(
    make_server: MakeServer,
) -> None:
    """Out of the box, hashes use argon2id with t=3, 64 MiB, p=4 (RFC 9106 low-memory)."""
    server = await make_server(argon2_profile="rfc9106-low-memory")
    await (await user(server.url, "ann")).close()
    [(stored,)] = await server.rows("SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    from clubroom_server.config import Settings

    assert Settings().argon2_profile == "rfc9106-low-memory"


@pytest.mark.sqlite_only
async def test_full_disk_answers_internal_error_and_recovers(
    connect: Connect, server: RunningServer
) -> None:
    """When the disk is full, sends get internal_error in plain words; later ones succeed."""
    ann = await connect("ann")
    bob = await connect("bob")
    await ann.ok("create_room", room="Lobby")
    await bob.ok("join_room", room="Lobby")
    await disk_full(server, True)
    failures = [await ann.call("send", room="Lobby", text="x" * 4000) for _ in range(5)]
    failed = [f for f in failures if f["type"] == "error"]
    assert failed and {f["code"] for f in failed} == {"internal_error"}
    assert "try again" in failed[0]["message"]
    await disk_full(server, False)
    reply = await ann.ok("send", room="Lobby", text="disk is back")
    assert reply["message"]["text"] == "disk is back"
    texts: list[str] = []
    while "disk is back" not in texts:
        texts.append((await bob.event("message"))["message"]["text"])
    assert texts.count("x" * 4000) == len(failures) - len(failed), "failed sends never shown"


@pytest.mark.sqlite_only
async def test_a_room_whose_creation_failed_leaves_no_trace(
    connect: Connect, server: RunningServer
) -> None:
    """create_room failing to write leaves no trace: nobody can join it, the name stays free."""
    ann = await connect("ann")
    bob = await connect("bob")
    assert server.app is not None
    await disk_read_only(server, True)
    writer = server.app.store._writer  # type: ignore[attr-defined]
    held = threading.Event()  # keeps the write in flight while bob tries the name
    holding = asyncio.ensure_future(writer.run(lambda db: held.wait(10)))
    creating = asyncio.ensure_future(ann.call("create_room", room="Lobby"))
    await wait_until(lambda: "lobby" in server.app.service._creating)  # type: ignore[union-attr]
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"
    assert (await bob.call("create_room", room="Lobby"))["code"] == "room_exists"
    held.set()
    await holding
    failed = await creating
    assert failed["type"] == "error" and failed["code"] == "internal_error"
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"
    await disk_read_only(server, False)
    assert (await bob.call("join_room", room="Lobby"))["code"] == "no_such_room"
    created = await bob.ok("create_room", room="Lobby")
    assert created["members"] == ["bob"], "ann never became a member of the failed room"
    await ann.no_event()


async def disk_full(server: RunningServer, full: bool) -> None:
    """Make the SQLite file unable to grow (or able again): a full disk, simulated."""
    assert server.app is not None
    writer = server.app.store._writer  # type: ignore[attr-defined]

    def limit_pages(db: sqlite3.Connection) -> None:
        (current,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={current if full else 1073741823}")

    await writer.run(limit_pages)


async def disk_read_only(server: RunningServer, read_only: bool) -> None:
    """Make every write fail as on a disk remounted read-only (or writable again)."""
    assert server.app is not None
    writer = server.app.store._writer  # type: ignore[attr-defined]
    await writer.run(lambda db: db.execute(f"PRAGMA query_only={int(read_only)}"))

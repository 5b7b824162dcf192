"""A crash (kill -9) in the middle of a burst loses no acknowledged message."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from tests.server.serverprocess import ServerProcess
from tests.wsclient import PASSWORD, WireClient, user

SERVE = ("--port", "0", "--rate-limit", "0", "--argon2-profile", "cheapest")


async def test_kill_9_during_a_burst_keeps_every_acknowledged_message(tmp_path: Path) -> None:
    """After SIGKILL and a restart, every message answered with sent is stored, once, in order."""
    db = tmp_path / "crash.db"
    server = await ServerProcess.start(*SERVE, "--db", str(db))
    clients = [await user(server.url, f"user{n}") for n in range(10)]
    for n, client in enumerate(clients):
        await client.ok("create_room" if n < 2 else "join_room", room=f"room{n % 2}")
    acked: dict[int, str] = {}

    async def burst(client: WireClient, room: str) -> None:
        for n in range(100_000):
            try:
                reply = await client.call("send", room=room, text=f"{client.username}-{n}")
            except (ConnectionError, ConnectionClosed, TimeoutError):  # the kill, seen either way
                return
            acked[reply["message"]["id"]] = reply["message"]["text"]

    tasks = [asyncio.create_task(burst(c, f"room{n % 2}")) for n, c in enumerate(clients)]
    await asyncio.sleep(1.0)
    await server.kill()
    await asyncio.gather(*tasks)
    assert len(acked) > 100, "the burst was under way"

    restarted = await ServerProcess.start(*SERVE, "--db", str(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT id, text FROM messages ORDER BY id").fetchall()
    stored = dict(rows)
    assert len(stored) == len(rows), "no duplicate ids"
    assert all(stored.get(i) == text for i, text in acked.items()), "every ack is stored"
    texts = [text for _, text in rows]
    assert len(set(texts)) == len(texts), "no message stored twice"
    again = await WireClient.open(restarted.url)
    await again.ok("login", username="user0", password=PASSWORD)
    joined = await again.ok("join_room", room="room0", after=0)
    ids = [m["id"] for m in joined["messages"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    await again.close()
    assert await restarted.terminate() == 0

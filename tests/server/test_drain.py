"""Graceful drain: a stop answers what is in flight, sends 1012, and never hangs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import MakeServer
from tests.server.serverprocess import ServerProcess
from tests.waiting import wait_until
from tests.wsclient import PASSWORD, WireClient, user

CHEAP = ("--argon2-profile", "cheapest")


async def test_a_request_in_flight_is_answered_before_the_restart_close(
    make_server: MakeServer,
) -> None:
    """A registration still hashing when the stop begins gets its welcome, then 1012."""
    server = await make_server(argon2_profile="rfc9106-low-memory")
    assert server.app is not None
    sessions = server.app.sessions
    client = await WireClient.open(server.url)
    idle = await WireClient.open(server.url)
    await client.ws.send(
        json.dumps({"type": "register", "id": 1, "username": "ann", "password": PASSWORD})
    )
    await wait_until(lambda: sessions.in_flight == 1)
    await server.stop()
    assert (await client.unmatched())["type"] == "welcome"
    assert await client.wait_closed() == 1012
    assert await idle.wait_closed() == 1012


async def test_a_client_that_ignores_the_close_cannot_hold_the_stop(tmp_path: Path) -> None:
    """A peer that never answers the closing handshake is cut off at --drain-timeout."""
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP, "--drain-timeout", "0.2"
    )
    deaf = await user(server.url, "ann")
    deaf.ws.transport.pause_reading()  # it will never see the close frame, nor answer it
    started = time.monotonic()
    assert await server.terminate() == 0
    # websockets alone would wait its 5-second close timeout for this peer.
    assert time.monotonic() - started < 4
    assert any("cutting off 1 connection" in line for line in server.output)
    deaf.ws.transport.resume_reading()
    await asyncio.wait_for(deaf.ws.wait_closed(), 5)


async def test_a_draining_server_accepts_no_new_connection(tmp_path: Path) -> None:
    """Once SIGTERM starts the drain, a new client is refused (it should go elsewhere), while
    the drain still waits for an old client that has not taken its close yet."""
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP, "--drain-timeout", "30"
    )
    deaf = await user(server.url, "ann")
    listening = await user(server.url, "bob")
    deaf.ws.transport.pause_reading()  # holds the drain open until it reads again
    server.process.send_signal(signal.SIGTERM)
    assert await listening.wait_closed() == 1012  # the drain has begun: no listener any more
    with pytest.raises(ConnectionRefusedError):
        await WireClient.open(server.url)
    assert server.process.returncode is None, "still draining the old connection"
    deaf.ws.transport.resume_reading()
    assert await deaf.wait_closed() == 1012
    assert await server.wait() == 0

"""Backpressure: a client that asks and never reads cannot make the server hold its replies."""

from __future__ import annotations

import asyncio
import json
import socket

import protocol
from tests.conftest import MakeServer, RunningServer
from tests.waiting import wait_until
from tests.wsclient import WireClient, user

BACKLOG = 256 * 1024
REQUESTS = 60


def unsent_bytes(server: RunningServer, username: str) -> int:
    """What the server holds for ``username``'s connection, not yet written to the socket."""
    assert server.app is not None
    (peer,) = [p for p in server.app.peers._peers if p.username == username]
    transport = peer.websocket.transport
    return transport.get_write_buffer_size() if transport is not None else 0


async def non_reading_client(server: RunningServer) -> tuple[socket.socket, WireClient]:
    """A registered client with a tiny receive buffer, about to stop reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    from websockets.asyncio.client import connect

    client = WireClient(await connect(server.url, sock=sock, max_size=None))
    await client.register("greedy")
    return sock, client


async def test_requests_wait_while_a_client_does_not_read(make_server: MakeServer) -> None:
    """Over the backlog limit the server stops reading requests; all are answered once read."""
    server = await make_server(rate_limit=0, backlog_limit=BACKLOG)
    writer = await user(server.url, "writer")
    await writer.ok("create_room", room="Big")
    for _ in range(100):
        await writer.ok("send", room="Big", text="x" * protocol.MAX_TEXT_LENGTH)
    _, greedy = await non_reading_client(server)
    await greedy.ok("join_room", room="Big")
    greedy.ws.transport.pause_reading()
    for request_id in range(1000, 1000 + REQUESTS):  # about 400 KB of replies each
        frame = {"type": "history", "id": request_id, "room": "Big", "before": 10**6, "limit": 100}
        await greedy.ws.send(json.dumps(frame))
    bound = BACKLOG + protocol.MAX_SERVER_FRAME_BYTES
    await wait_until(lambda: unsent_bytes(server, "greedy") > BACKLOG, within=10)
    for _ in range(50):  # the backlog stays bounded while the client does not read
        assert unsent_bytes(server, "greedy") <= bound
        await asyncio.sleep(0.02)
    greedy.ws.transport.resume_reading()
    replies = [await greedy.unmatched() for _ in range(REQUESTS)]
    assert [r["id"] for r in replies] == list(range(1000, 1000 + REQUESTS))
    assert (await greedy.call("logout"))["type"] == "ok", "the connection was never closed"
    for client in (greedy, writer):
        await client.close()

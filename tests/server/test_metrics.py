"""Prometheus metrics: scraped with the prometheus-client parser while real traffic flows."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from clubroom_server.collector import watch_pauses
from clubroom_server.metrics import gc_paused
from tests.admincli import admin_ok
from tests.conftest import MakeServer, RunningServer
from tests.server.scrape import Samples, get, names, scrape_app, value
from tests.wsclient import WireClient, in_room, user

# Metrics describe one process; a cluster's nodes are scraped one by one and
# summed by Prometheus, so these tests run against one process.
pytestmark = pytest.mark.single_process


async def scrape(server: RunningServer) -> Samples:
    """Every sample of the server's /metrics, keyed by name and labels."""
    return await scrape_app(server.app)


@pytest.fixture
async def metered(make_server: MakeServer) -> RunningServer:
    """A server with its metrics endpoint on a free loopback port."""
    return await make_server(metrics_address="127.0.0.1:0", rate_limit=0)


async def test_counters_and_gauges_follow_real_traffic(metered: RunningServer) -> None:
    """Sends, deliveries, connections, users, rooms and the latency histogram all move."""
    before = await scrape(metered)
    clients = [await user(metered.url, name) for name in ("ann", "bob", "cyd")]
    await in_room(clients, "Lobby")
    for n in range(5):
        await clients[0].ok("send", room="Lobby", text=f"hello {n}")
    for client in clients:
        for _ in range(5):
            await client.event("message")
    after = await scrape(metered)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("clubroom_messages_stored_total") == 5
    # 5 messages to 3 members, plus member_joined: bob→ann, cy→ann and bob.
    assert delta("clubroom_events_delivered_total") == 5 * 3 + 3
    assert delta("clubroom_send_stored_seconds_count") == 5
    assert delta("clubroom_store_commit_batch_writes_count") >= 1
    assert value(after, "clubroom_connections_open") == 3
    assert value(after, "clubroom_users_online") == 3
    assert value(after, "clubroom_rooms") == 1
    assert value(after, "process_open_fds") > 0
    assert value(after, "clubroom_database_up") == 1
    assert not {name for name in names(after) if name.startswith("clubroom_bus_")}, "no bus here"
    for client in clients:
        await client.close()


async def test_errors_login_failures_and_throttles_are_counted(make_server: MakeServer) -> None:
    """A wrong password, a bad token and a throttled login each move their own series."""
    server = await make_server(metrics_address="127.0.0.1:0", login_failures_per_user=1)
    await (await user(server.url, "ann")).close()
    before = await scrape(server)
    stranger = await WireClient.open(server.url)
    await stranger.call("login", username="ann", password="Wrong-guess-42!")
    await stranger.call("login", username="ann", password="Wrong-guess-42!")
    await stranger.call("resume", token="not-a-token")
    await stranger.call("send", room="Lobby", text="too early")
    after = await scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("clubroom_login_failures_total", method="password") == 1
    assert delta("clubroom_login_failures_total", method="token") == 1
    assert delta("clubroom_login_throttled_total") == 1
    assert delta("clubroom_errors_sent_total", code="invalid_credentials") == 1
    assert delta("clubroom_errors_sent_total", code="too_many_attempts") == 1
    assert delta("clubroom_errors_sent_total", code="unauthenticated") == 1
    await stranger.close()


async def test_rooms_deleted_by_cleanup_are_counted(make_server: MakeServer) -> None:
    """An emptied room counts as deleted by cleanup, without its name in any label."""
    server = await make_server(metrics_address="127.0.0.1:0", grace=0)
    before = await scrape(server)
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Secret-Plans")
    await ann.ok("leave_room", room="Secret-Plans")
    after = await scrape(server)
    cleaned = value(after, "clubroom_rooms_deleted_total", reason="cleanup")
    assert cleaned - value(before, "clubroom_rooms_deleted_total", reason="cleanup") == 1
    assert value(after, "clubroom_rooms") == 0
    labels = {label for (_, pairs) in after for label in pairs}
    assert not any("Secret-Plans" in v or v == "ann" for _, v in labels)
    await ann.close()


async def test_rooms_deleted_by_an_admin_are_counted(metered: RunningServer) -> None:
    """``rooms delete`` on the running server counts reason=admin once its members are told."""
    before = await scrape(metered)
    ann = await user(metered.url, "ann")
    await ann.ok("create_room", room="Doomed")
    await admin_ok("rooms", "delete", "Doomed", "--yes", "--db", metered.db)
    assert await ann.unmatched() == {"type": "room_deleted", "room": "Doomed"}
    after = await scrape(metered)
    deleted = value(after, "clubroom_rooms_deleted_total", reason="admin")
    assert deleted - value(before, "clubroom_rooms_deleted_total", reason="admin") == 1
    await ann.close()


async def test_a_slow_consumer_closed_is_counted(make_server: MakeServer) -> None:
    """A client that stops reading is closed with 4008, and the counter says so once."""
    server = await make_server(
        metrics_address="127.0.0.1:0", rate_limit=0, send_buffer_limit=64 * 1024
    )
    name = "clubroom_slow_consumers_closed_total"
    before = value(await scrape(server), name)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow = WireClient(await ws_connect(server.url, sock=sock, max_size=None))
    await slow.register("slow")
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Flood")
    await slow.ok("join_room", room="Flood")
    slow.ws.transport.pause_reading()
    sent = 0
    while value(await scrape(server), name) == before and sent < 5000:  # kernel buffers hold MBs
        for _ in range(20):
            await ann.ok("send", room="Flood", text="x" * 4000)
        sent += 20
    slow.ws.transport.resume_reading()
    assert await slow.wait_closed() == 4008
    assert value(await scrape(server), name) == before + 1
    await ann.close()


async def test_metrics_are_off_by_default_and_never_on_the_chat_port(server: RunningServer) -> None:
    """Without --metrics-address nothing listens for metrics, and the chat port has no /metrics."""
    assert server.app is not None and server.app.metrics is None
    with pytest.raises(urllib.error.HTTPError):
        await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/metrics")


async def test_the_endpoint_answers_only_metrics_and_health(metered: RunningServer) -> None:
    """Other paths get 404; OpenMetrics is served to scrapers that ask for it."""
    assert metered.app is not None and metered.app.metrics is not None
    base = f"http://{metered.app.metrics.address}"
    with pytest.raises(urllib.error.HTTPError) as error:
        await asyncio.to_thread(get, base + "/")
    assert error.value.code == 404
    assert await asyncio.to_thread(get, base + "/healthz") == "ok"
    request = urllib.request.Request(
        base + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    def fetch() -> tuple[str, str]:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.headers["Content-Type"], response.read().decode()

    content_type, body = await asyncio.to_thread(fetch)
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


async def test_a_taken_metrics_port_is_a_clear_start_error(tmp_path: Path) -> None:
    """The server refuses to start, naming the metrics address, without a traceback."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clubroom_server", "serve", "--port", "0",
        "--db", str(tmp_path / "c.db"), "--metrics-address", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    taken.close()
    assert process.returncode == 1
    assert f"--metrics-address 127.0.0.1:{port}: Address already in use" in out.decode()
    assert "Traceback" not in out.decode()


async def test_full_collections_are_counted_with_their_pause(metered: RunningServer) -> None:
    """A full garbage collection stops every connection: /metrics says how often and how long."""
    watch_pauses(gc_paused)  # what `serve` does once it is listening
    before = await scrape(metered)
    gc.collect()
    gc.collect(1)
    after = await scrape(metered)

    def delta(name: str, generation: str) -> float:
        return value(after, name, generation=generation) - value(
            before, name, generation=generation
        )

    assert delta("clubroom_gc_pause_seconds_count", "2") >= 1
    assert delta("clubroom_gc_pause_seconds_count", "1") >= 1
    assert delta("clubroom_gc_pause_seconds_sum", "2") > 0
    assert ("clubroom_gc_pause_seconds_count", (("generation", "0"),)) not in after

"""Fan-out: queued frames leave whole, in order, several to a write; stored before delivered."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import MakeServer
from tests.server.test_metrics import scrape, value
from tests.wsclient import WireClient, in_room, user

SENDERS = 8
EACH = 12


async def burst(senders: list[WireClient], room: str = "Lobby") -> None:
    """Every sender pipelines its messages (no wait for a reply): commits hold many at once."""

    async def send_all(client: WireClient) -> None:
        await asyncio.gather(
            *(client.ok("send", room=room, text=f"{client.username} {n}") for n in range(EACH))
        )

    await asyncio.gather(*(send_all(client) for client in senders))


@pytest.mark.single_process
async def test_a_burst_arrives_whole_and_in_order_with_fewer_writes_than_frames(
    make_server: MakeServer,
) -> None:
    """Frames that share a socket write each arrive complete, once, in the room's order."""
    server = await make_server(metrics_address="127.0.0.1:0", rate_limit=0)
    senders = [await user(server.url, f"sender{n}") for n in range(SENDERS)]
    readers = [await user(server.url, f"reader{n}") for n in range(3)]
    await in_room([*senders, *readers])
    before = await scrape(server)
    await burst(senders)
    total = SENDERS * EACH
    for reader in readers:
        messages = [(await reader.event("message"))["message"] for _ in range(total)]
        ids = [m["id"] for m in messages]
        assert ids == sorted(ids) and len(set(ids)) == total
        for name in (f"sender{n}" for n in range(SENDERS)):  # each sender's own order kept too
            texts = [m["text"] for m in messages if m["author"] == name]
            assert texts == [f"{name} {n}" for n in range(EACH)]
        await reader.no_event(within=0.1)
    after = await scrape(server)
    frames = value(after, "clubroom_events_delivered_total") - value(
        before, "clubroom_events_delivered_total"
    )
    writes = value(after, "clubroom_socket_writes_total") - value(
        before, "clubroom_socket_writes_total"
    )
    assert frames == total * (SENDERS + 3)
    # Replies share the writes too, so fewer writes than events alone shows sharing.
    assert 0 < writes < frames


@pytest.mark.single_process
async def test_a_senders_reply_leaves_in_the_write_of_its_own_message_event(
    make_server: MakeServer,
) -> None:
    """A send costs its sender one socket write: the ``sent`` reply and the echo share it."""
    server = await make_server(metrics_address="127.0.0.1:0", rate_limit=0)
    ann = await user(server.url, "ann")
    await in_room([ann])
    before = await scrape(server)
    for n in range(5):
        sent = await ann.ok("send", room="Lobby", text=f"hello {n}")
        echo = await ann.event("message")
        assert echo["message"] == sent["message"]
    after = await scrape(server)
    writes = value(after, "clubroom_socket_writes_total") - value(
        before, "clubroom_socket_writes_total"
    )
    assert writes == 5


async def test_every_message_is_stored_before_anyone_receives_it(
    make_server: MakeServer,
) -> None:
    """A member receiving a message event finds its row already in the database."""
    server = await make_server(rate_limit=0)
    senders = [await user(server.url, f"sender{n}") for n in range(4)]
    watcher = await user(server.url, "watcher")
    await in_room([*senders, watcher])
    watcher._reader.cancel()  # read the socket ourselves: check each event the moment it lands
    sending = asyncio.create_task(burst(senders))
    missing: list[int] = []
    for _ in range(4 * EACH):
        frame = json.loads(await asyncio.wait_for(watcher.ws.recv(), 5))
        assert frame["type"] == "message", frame
        message_id = frame["message"]["id"]
        if not await server.rows("SELECT id FROM messages WHERE id = ?", (message_id,)):
            missing.append(message_id)
    await sending
    assert missing == []


async def test_a_slow_reader_does_not_stall_the_others(make_server: MakeServer) -> None:
    """Writes are per connection: one client that stops reading delays nobody else."""
    server = await make_server(rate_limit=0)
    ann, bob, stuck = [await user(server.url, name) for name in ("ann", "bob", "stuck")]
    await in_room([ann, bob, stuck])
    stuck.ws.transport.pause_reading()
    for n in range(30):
        await ann.ok("send", room="Lobby", text=f"{n} " + "x" * 3000)
    texts = [(await bob.event("message"))["message"]["text"] for _ in range(30)]
    assert [int(text.split()[0]) for text in texts] == list(range(30))
    stuck.ws.transport.resume_reading()
    texts = [(await stuck.event("message"))["message"]["text"] for _ in range(30)]
    assert [int(text.split()[0]) for text in texts] == list(range(30))

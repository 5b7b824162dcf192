"""The protocol client on its own: replies, events, timeouts, reconnect, resume, re-send."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from clubroom_tui.client import (
    KEEP_MESSAGES,
    ROOM_DELETED,
    SERVER_RESTARTING,
    Backoff,
    ConnectionState,
    MembersChanged,
    NotConnected,
    RequestFailed,
    RequestTimeout,
    RoomLost,
    RoomState,
    SendDelayed,
    SessionEnded,
    StateChanged,
)
from protocol import ErrorCode, Message, Reaction
from tests.admincli import admin_ok
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    PASSWORD,
    MakeClient,
    MakeLink,
    free_port,
    member,
    messages_added,
    two_clients_in_lobby,
    wait_for,
    wait_ready,
)


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A WebSocket server that accepts connections and never answers anything."""

    async def ignore(websocket: ServerConnection) -> None:
        async for _ in websocket:
            pass

    async with serve(ignore, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def test_reply_is_typed_and_uses_canonical_name(make_client: MakeClient) -> None:
    """Logging in as "ann" to the account registered as "Ann" returns the canonical spelling."""
    await make_client("Ann")
    client = await make_client()
    await wait_ready(client)
    welcome = await client.login("ann", PASSWORD)
    assert (welcome.username, client.username) == ("Ann", "Ann")
    assert client.token == welcome.token


async def test_error_reply_raises_request_failed(make_client: MakeClient) -> None:
    """A server error becomes RequestFailed with its code and human sentence."""
    client = await make_client("ann")
    await client.create_room("lobby")
    with pytest.raises(RequestFailed) as failure:
        await client.create_room("Lobby")
    assert failure.value.code is ErrorCode.ROOM_EXISTS
    assert "already exists" in str(failure.value)


async def test_other_members_get_live_events(make_client: MakeClient) -> None:
    """A member hears about a joiner and receives their message as an event."""
    ann = await make_client("ann")
    bob = await make_client("bob")
    await ann.create_room("lobby")
    events = ann.subscribe()
    await bob.join_room("lobby")
    await bob.send("lobby", "hi ann")
    await wait_for(lambda: ann.rooms["lobby"].messages, "bob's message at ann")
    seen = events.drain()
    assert MembersChanged("lobby", ("ann", "bob"), joined="bob") in seen
    assert messages_added(seen) == ["hi ann"]


async def test_request_times_out_when_the_server_is_silent(
    silent_server: str, make_client: MakeClient
) -> None:
    """A request that gets no reply raises RequestTimeout after the configured time."""
    client = await make_client(url=silent_server, request_timeout=0.3)
    await wait_ready(client)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RequestTimeout):
        await client.login("ann", PASSWORD)
    assert asyncio.get_running_loop().time() - started < 2


async def test_unreachable_server_is_reported_and_retried(make_client: MakeClient) -> None:
    """With nothing listening the client says so, refuses requests and keeps trying."""
    client = await make_client(url=f"ws://127.0.0.1:{free_port()}")
    events = client.subscribe()
    await wait_for(lambda: "Cannot reach" in client.state_detail, "the failure to be reported")
    assert client.state is ConnectionState.OFFLINE
    assert "retrying in" in client.state_detail
    with pytest.raises(NotConnected):
        await client.login("ann", PASSWORD)
    seen: list[object] = []

    def retried_twice() -> bool:
        seen.extend(events.drain())
        return sum(isinstance(e, StateChanged) and e.retry_in is not None for e in seen) >= 2

    await wait_for(retried_twice, "two more attempts")


async def test_connects_once_the_server_comes_up(make_server: MakeServer, make_client):
    """A client started before its server connects by itself when the server starts."""
    port = free_port()
    client = await make_client(url=f"ws://127.0.0.1:{port}")
    await wait_for(lambda: "Cannot reach" in client.state_detail, "a failed attempt")
    await make_server(port=port)
    await wait_ready(client)
    assert (await client.register("ann", PASSWORD)).username == "ann"


async def test_resumes_and_rejoins_after_a_restart(
    server: RunningServer, make_client: MakeClient
) -> None:
    """After the server restarts, the client is logged in and in its rooms again by itself."""
    ann = await member(make_client, "lobby", "ann", create=True)
    await server.stop()
    await wait_for(lambda: not ann.ready, "the client to notice the outage")
    await server.start()
    await wait_ready(ann)
    sent = await ann.send("lobby", "still here")
    assert sent.author == "ann"
    assert ann.rooms["lobby"].members == ("ann",)


async def test_a_server_restart_announces_no_one_as_newly_joined(
    server: RunningServer, make_client: MakeClient
) -> None:
    """Members who were there before a restart come back without a "joined" (no "left" came)."""
    ann, bob = await two_clients_in_lobby(make_client)
    streams = [ann.subscribe(), bob.subscribe()]
    await server.stop()
    await wait_for(lambda: not ann.ready and not bob.ready, "both to notice the outage")
    await server.start()
    for client in (ann, bob):
        await wait_for(
            lambda c=client: c.ready and c.rooms["lobby"].members == ("ann", "bob"),
            "both to be back in the room",
        )
    changes = [e for s in streams for e in s.drain() if isinstance(e, MembersChanged)]
    assert [(e.joined, e.left) for e in changes if e.joined or e.left] == []


async def test_a_server_restart_is_named_and_the_outbox_survives_it(
    server: RunningServer, make_client: MakeClient
) -> None:
    """A drain (1012) reads as "restarting"; a message typed meanwhile is sent once it is back."""
    ann = await member(make_client, "lobby", "ann", create=True)
    states = ann.subscribe()
    await server.stop()
    await wait_for(lambda: "restarting" in ann.state_detail, "the restart to be named")
    assert any(
        isinstance(e, StateChanged) and e.detail == SERVER_RESTARTING for e in states.drain()
    )
    pending = ann.queue_send("lobby", "typed during the restart")
    await server.start()
    message = await asyncio.wait_for(pending.future, 10)
    assert message.text == "typed during the restart"
    assert not ann.server_restarting


async def test_a_room_deleted_by_an_admin_is_forgotten_with_its_outbox(
    server: RunningServer, make_client: MakeClient
) -> None:
    """room_deleted drops the room and its unsent messages, and says why."""
    ann = await member(make_client, "lobby", "ann", create=True)
    events = ann.subscribe()
    await admin_ok("rooms", "delete", "lobby", "--yes", "--db", str(server.settings.db))
    await wait_for(lambda: "lobby" not in ann.rooms, "the room to be forgotten")
    lost = [e for e in events.drain() if isinstance(e, RoomLost)]
    assert [(e.room, e.reason) for e in lost] == [("lobby", ROOM_DELETED)]


async def test_sessions_revoked_by_an_admin_end_the_client_session(
    server: RunningServer, make_client: MakeClient
) -> None:
    """After 4001 the client's resume fails, so it ends the session (the app shows login)."""
    ann = await make_client("ann")
    events = ann.subscribe()
    await admin_ok("sessions", "revoke", "ann", "--db", str(server.settings.db))
    await wait_for(lambda: ann.token is None, "the session to end")
    assert any(isinstance(e, SessionEnded) for e in events.drain())


async def test_catches_up_on_messages_sent_while_away(
    server: RunningServer, make_client: MakeClient
) -> None:
    """After a server restart, messages sent before the client is back arrive once, in order."""
    ann, bob = await two_clients_in_lobby(make_client, backoff=Backoff(initial=1.2, maximum=1.2))
    await bob.send("lobby", "before")
    await wait_for(lambda: len(ann.rooms["lobby"].messages) == 1, "the first message")
    events = ann.subscribe()
    await server.stop()
    await wait_for(lambda: ann.state is ConnectionState.OFFLINE, "ann to be offline")
    await server.start()
    await wait_ready(bob)
    await bob.send("lobby", "while you were away 1")
    await bob.send("lobby", "while you were away 2")
    assert not ann.ready, "ann came back too early for this test"
    await wait_ready(ann)
    await wait_for(lambda: len(ann.rooms["lobby"].messages) == 3, "the missed messages")
    assert messages_added(events.drain()) == ["while you were away 1", "while you were away 2"]


async def test_catch_up_pages_through_a_long_absence(
    make_server: MakeServer, make_link: MakeLink, make_client: MakeClient
) -> None:
    """More than one join page of missed messages (over 500) all arrive, in order, once."""
    server = await make_server(rate_limit=0, room_rate_limit=0)
    link = await make_link(server)
    ann, bob = await two_clients_in_lobby(make_client, url=server.url, ann_url=link.url)
    events = ann.subscribe()
    link.refusing = True
    link.cut()
    await wait_for(lambda: not ann.ready, "ann to be cut off")
    missed = [f"m{n:03d}" for n in range(520)]
    await asyncio.gather(*(bob.queue_send("lobby", text).future for text in missed))
    link.refusing = False
    await wait_ready(ann)
    await wait_for(lambda: len(ann.rooms["lobby"].messages) == 520, "every missed message")
    assert messages_added(events.drain()) == missed


async def test_queued_send_is_delivered_exactly_once(
    server: RunningServer, make_client: MakeClient
) -> None:
    """A message typed during an outage is sent after reconnecting and stored only once."""
    ann, bob = await two_clients_in_lobby(make_client)
    await server.stop()
    await wait_for(lambda: not ann.ready, "the client to notice the outage")
    pending = ann.queue_send("lobby", "typed offline")
    await asyncio.sleep(0.2)
    assert not pending.future.done()
    await server.start()
    message = await asyncio.wait_for(pending.future, 5)
    await wait_for(lambda: bob.rooms["lobby"].messages, "bob to see it")
    page = await bob.history("lobby", before=message.id + 1)
    assert [m.text for m in page.messages] == ["typed offline"]
    assert [m.text for m in bob.rooms["lobby"].messages] == ["typed offline"]


async def test_send_whose_reply_was_lost_is_stored_once(
    server: RunningServer, make_link: MakeLink, make_client: MakeClient
) -> None:
    """A message stored by the server whose reply never arrived is re-sent with its nonce, once."""
    faulty_link = await make_link(server)
    ann, bob = await two_clients_in_lobby(make_client, ann_url=faulty_link.url)
    faulty_link.losing_replies = True
    pending = ann.queue_send("lobby", "exactly once")
    await wait_for(lambda: bob.rooms["lobby"].messages, "the server to store it")
    assert not pending.future.done()
    faulty_link.losing_replies = False
    faulty_link.cut()
    message = await asyncio.wait_for(asyncio.shield(pending.future), 5)
    stored = bob.rooms["lobby"].messages
    assert [(m.id, m.text) for m in stored] == [(message.id, "exactly once")]
    page = await bob.history("lobby", before=message.id + 1)
    assert [m.text for m in page.messages] == ["exactly once"]
    assert [m.text for m in ann.rooms["lobby"].messages] == ["exactly once"]


async def test_rate_limited_sends_wait_and_keep_their_order(
    make_server: MakeServer, make_client: MakeClient
) -> None:
    """Past the rate limit the client reports a delay and still delivers everything in order."""
    server = await make_server(rate_limit=20, rate_burst=1)
    ann = await make_client("ann", url=server.url)
    await ann.create_room("lobby")
    events = ann.subscribe()
    items = [ann.queue_send("lobby", f"burst {n}") for n in range(4)]
    stored = await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), 5)
    assert [m.text for m in stored] == [f"burst {n}" for n in range(4)]
    assert any(isinstance(e, SendDelayed) for e in events.drain())


async def test_invalid_text_is_refused_before_sending(make_client: MakeClient) -> None:
    """Text the server would refuse raises RequestFailed at once and queues nothing."""
    ann = await member(make_client, "lobby", "ann", create=True)
    with pytest.raises(RequestFailed) as failure:
        ann.queue_send("lobby", "   ")
    assert failure.value.code is ErrorCode.INVALID_TEXT
    assert ann.pending_sends("lobby") == []


async def test_history_pages_backwards(make_server: MakeServer, make_client: MakeClient) -> None:
    """Joining shows the latest 50 and history() prepends the older ones."""
    server = await make_server(rate_limit=0, room_rate_limit=0)
    ann = await make_client("ann", url=server.url)
    await ann.create_room("lobby")
    for n in range(60):
        await ann.send("lobby", f"m{n:02d}")
    bob = await make_client("bob", url=server.url)
    await bob.join_room("lobby")
    state = bob.rooms["lobby"]
    assert (len(state.messages), state.messages[0].text, state.has_older) == (50, "m10", True)
    page = await bob.history("lobby")
    assert [m.text for m in page.messages] == [f"m{n:02d}" for n in range(10)]
    assert (len(state.messages), state.has_older) == (60, False)


async def test_logout_forgets_the_session(make_client: MakeClient) -> None:
    """After logout the token no longer resumes a session."""
    ann = await make_client("ann")
    token = ann.token
    assert token
    await ann.logout()
    assert (ann.username, ann.token, ann.rooms) == (None, None, {})
    with pytest.raises(RequestFailed) as failure:
        await ann.resume(token)
    assert failure.value.code is ErrorCode.INVALID_TOKEN


def test_backoff_grows_exponentially_with_jitter() -> None:
    """Delays double per attempt up to the maximum and are jittered between 50 and 100 %."""
    backoff = Backoff(initial=1.0, maximum=8.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {backoff.delay(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


def test_client_module_does_not_import_textual() -> None:
    """The protocol client is usable without the TUI (bots, tests)."""
    code = (
        "import sys, clubroom_tui.client; "
        "sys.exit(any(m.split('.')[0] in ('textual', 'rich') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_a_room_state_forgets_its_oldest_messages_beyond_the_cap() -> None:
    """Past the cap the oldest messages are dropped and marked as fetchable again."""
    state = RoomState(name="big")
    batch = [
        Message(id=n, room="big", author="bob", text=str(n), at="2026-01-01T00:00:00.000Z")
        for n in range(1, KEEP_MESSAGES + KEEP_MESSAGES // 5)
    ]
    state.add_newer(batch)
    assert len(state.messages) == KEEP_MESSAGES
    assert state.messages[-1].id == batch[-1].id
    assert state.has_older


async def test_catches_up_on_edits_deletions_and_reactions_missed_while_away(
    server: RunningServer, make_link: MakeLink, make_client: MakeClient
) -> None:
    """Changes made while the client was cut off reach its state when it rejoins."""
    link = await make_link(server)
    ann, bob = await two_clients_in_lobby(make_client, url=server.url, ann_url=link.url)
    typo = await bob.send("lobby", "helo")
    oops = await bob.send("lobby", "oops")
    liked = await ann.send("lobby", "lunch?")
    await wait_for(lambda: len(ann.rooms["lobby"].messages) == 3, "the messages")
    link.refusing = True
    link.cut()
    await wait_for(lambda: not ann.ready, "ann to be cut off")
    await bob.edit("lobby", typo.id, "hello")
    await bob.delete("lobby", oops.id)
    await bob.react("lobby", liked.id, "👍")
    link.refusing = False
    await wait_ready(ann)
    await wait_for(lambda: ann.rooms["lobby"].messages[0].text == "hello", "the edit")
    held = {m.id: m for m in ann.rooms["lobby"].messages}
    assert held[typo.id].edited_at is not None
    assert held[oops.id].deleted and held[oops.id].text == ""
    assert held[liked.id].reactions == [Reaction("👍", 1, False)]
    await ann.react("lobby", liked.id, "👍")
    await wait_for(
        lambda: (ann.rooms["lobby"].messages[2].reactions or [None])[0] == Reaction("👍", 2, True),
        "our own reaction, marked mine",
    )


async def test_of_several_urls_the_one_that_answers_is_used(
    server: RunningServer, make_client: MakeClient
) -> None:
    """Given dead servers and a live one, the client tries them in turn and connects."""
    dead = [f"ws://127.0.0.1:{free_port()}" for _ in range(2)]
    client = await make_client(url=[dead[0], server.url, dead[1]])
    await wait_ready(client)
    assert client.current_url == server.url and client.url == dead[0]
    assert (await client.register("ann", PASSWORD)).username == "ann"

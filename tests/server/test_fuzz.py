"""Property-based fuzzing of a live server with arbitrary frames (hypothesis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

import protocol
from tests.server.serverprocess import ServerProcess
from tests.wsclient import PASSWORD

REQUEST_TYPES = sorted(protocol.REQUEST_TYPES)
FIELDS = [
    "id",
    "username",
    "password",
    "token",
    "room",
    "text",
    "nonce",
    "after",
    "before",
    "limit",
]
EVENTS = {"message", "member_joined", "member_left"}

# Unicode with the awkward parts: surrogates (as JSON escapes), NUL, RTL marks.
nasty_text = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\u202e", "\u200f", "\ufeff", "\x1b", "\u0301", "\U0001f600"]),
    ),
    max_size=80,
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), nasty_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)
requestish = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(REQUEST_TYPES), nasty_text, json_scalars)},
    optional={
        field: st.one_of(json_values, st.sampled_from(["Fuzz", "fuzzer", 1, -1]))
        for field in FIELDS
    },
).map(json.dumps)
lone_surrogates = st.sampled_from(
    [
        '{"type": "send", "room": "Fuzz", "text": "\\ud800"}',
        '{"type": "\\udfff"}',
        '{"type": "login", "username": "\\ud83d", "password": "x"}',
    ]
)
frames = st.one_of(
    requestish,
    json_values.map(json.dumps),
    lone_surrogates,
    nasty_text,
    st.binary(max_size=200),
)


class Chat:
    """Two sync connections: the fuzzer, and a well-behaved member who keeps chatting."""

    def __init__(self, url: str, stack: ExitStack) -> None:
        self.fuzzer = stack.enter_context(connect(url, subprotocols=["clubroom.v1"]))
        self.friend = stack.enter_context(connect(url, subprotocols=["clubroom.v1"]))
        _request(self.fuzzer, {"type": "register", "username": "fuzzer", "password": PASSWORD})
        _request(self.friend, {"type": "register", "username": "friend", "password": PASSWORD})
        _request(self.friend, {"type": "create_room", "room": "Fuzz"})
        _request(self.fuzzer, {"type": "join_room", "room": "Fuzz"})
        self.sent = 0

    def friend_still_chats(self) -> None:
        self.sent += 1
        reply = _request(self.friend, {"type": "send", "room": "Fuzz", "text": f"ok {self.sent}"})
        assert reply["type"] == "sent", reply


def _request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(frame))
    return _next_reply(ws)


def _next_reply(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not an event (events are skipped)."""
    while True:
        frame = json.loads(ws.recv(timeout=5))
        if frame.get("type") not in EVENTS:
            return frame


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        ServerProcess.start(
            "--port",
            "0",
            "--db",
            str(db),
            "--argon2-profile",
            "cheapest",
            "--rate-limit",
            "0",
            "--room-rate-limit",
            "0",
            "--login-failures-per-user",
            "0",
            "--login-failures-per-address",
            "0",
        )
    )
    with ExitStack() as stack:
        yield Chat(server.url, stack)
    assert loop.run_until_complete(server.terminate()) == 0
    log = "".join(server.output)
    assert "Traceback" not in log and "unexpected failure" not in log, log
    loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames)
def test_every_frame_gets_a_correct_reply_and_nothing_breaks(
    chat: Chat, frame: str | bytes
) -> None:
    """Any frame gets one well-formed reply with a listed code; the connection and chat go on."""
    chat.fuzzer.send(frame)
    raw = _next_reply(chat.fuzzer)
    reply = msgspec.json.decode(json.dumps(raw), type=protocol.ServerFrame)  # typed check
    assert isinstance(reply, protocol.Reply)
    if isinstance(reply, protocol.Error):
        assert reply.code in set(protocol.ErrorCode) and reply.message
        assert reply.code != protocol.ErrorCode.INTERNAL_ERROR
    if raw.get("type") == "welcome" or raw.get("type") == "ok":
        # The fuzzer may have logged in as someone else or out: put it back.
        _request(chat.fuzzer, {"type": "logout"})
        _request(chat.fuzzer, {"type": "login", "username": "fuzzer", "password": PASSWORD})
        _request(chat.fuzzer, {"type": "join_room", "room": "Fuzz"})
    chat.friend_still_chats()

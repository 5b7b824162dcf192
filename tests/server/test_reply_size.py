"""Replies that carry messages are bounded in bytes, so any client can always catch up."""

from __future__ import annotations

import json

import protocol
from tests.conftest import MakeServer
from tests.wsclient import WireClient

EMOJI_TEXT = "😀" * protocol.MAX_TEXT_LENGTH  # 16,000 bytes of UTF-8: the largest message
COUNT = 101


async def strict_client(url: str, username: str) -> WireClient:
    """A registered client that, like the TUI, refuses frames over the documented maximum."""
    client = await WireClient.open(url, max_size=protocol.MAX_SERVER_FRAME_BYTES)
    await client.register(username)
    return client


async def raw_reply(client: WireClient, kind: str, **fields: object) -> tuple[dict, int]:
    """A reply and the size of its frame on the wire."""
    reply = await client.ok(kind, **fields)
    return reply, len(json.dumps(reply, ensure_ascii=False).encode())


async def filled_room(make_server: MakeServer) -> tuple[WireClient, WireClient]:
    """A room holding 101 of the largest possible messages, and a second member."""
    server = await make_server(rate_limit=0)
    writer = await strict_client(server.url, "writer")
    reader = await strict_client(server.url, "reader")
    await writer.ok("create_room", room="Emoji")
    for _ in range(COUNT):
        await writer.ok("send", room="Emoji", text=EMOJI_TEXT)
    return writer, reader


async def test_catching_up_after_large_messages_pages_by_bytes(make_server: MakeServer) -> None:
    """join with after answers pages under the budget saying more; rejoining gets all 101."""
    writer, reader = await filled_room(make_server)
    seen: list[int] = []
    after = 0
    while True:
        joined, size = await raw_reply(reader, "join_room", room="Emoji", after=after)
        assert size <= protocol.MAX_SERVER_FRAME_BYTES
        seen += [m["id"] for m in joined["messages"]]
        if not joined["more"]:
            break
        await reader.no_event(0.1)  # not live while catching up
        after = seen[-1]
    assert len(seen) == COUNT and seen == sorted(set(seen)), "every message exactly once"
    assert len(seen) > 3, "it took several pages"
    await writer.ok("send", room="Emoji", text="now live")
    assert (await reader.event("message"))["message"]["text"] == "now live"


async def test_latest_join_and_history_are_bounded_by_bytes(make_server: MakeServer) -> None:
    """A plain join and history(limit 100) keep the newest messages that fit, and say more."""
    writer, reader = await filled_room(make_server)
    joined, size = await raw_reply(reader, "join_room", room="Emoji")
    assert size <= protocol.MAX_SERVER_FRAME_BYTES and joined["more"] is True
    ids = [m["id"] for m in joined["messages"]]
    assert 1 <= len(ids) < protocol.JOIN_LATEST
    page, size = await raw_reply(reader, "history", room="Emoji", before=ids[0], limit=100)
    assert size <= protocol.MAX_SERVER_FRAME_BYTES and page["more"] is True
    older = [m["id"] for m in page["messages"]]
    assert older and older[-1] < ids[0] and older == sorted(older)
    await writer.ok("send", room="Emoji", text="live at once")
    assert (await reader.event("message"))["message"]["text"] == "live at once", (
        "a latest join is live even though it says more"
    )


def test_fit_to_budget_keeps_the_right_end() -> None:
    """A catch-up page keeps the oldest messages, a latest page the newest; one always fits."""
    messages = [
        protocol.Message(id=n, room="r", author="a", text="x" * 100, at="t") for n in range(10)
    ]
    oldest, cut = protocol.fit_to_budget(messages, keep_newest=False, budget=460)
    newest, _ = protocol.fit_to_budget(messages, keep_newest=True, budget=460)
    assert cut and [m.id for m in oldest] == [0, 1, 2]
    assert [m.id for m in newest] == [7, 8, 9]
    assert protocol.fit_to_budget(messages, keep_newest=True, budget=1)[0] == messages[-1:]

"""A bare protocol client for server tests: raw JSON frames over a real WebSocket.

Deliberately not the product's client (``clubroom_tui.client``): server tests
should see exactly the frames on the wire, replies and events apart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PASSWORD = "correct-horse-1!"
TIMEOUT = 5.0


EVENT_TYPES = frozenset(
    {"message", "member_joined", "member_left", "message_changed"}
    # conversation events (docs/protocol.md, "Conversation")
    | {"read", "mention", "typing", "topic", "owner", "kicked", "invited"}
)


class WireClient:
    """Sends requests with fresh ids, matches replies by id and queues events."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.ws = websocket
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._unmatched: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())
        self.username = ""
        self.token = ""
        self.arrivals: list[str] = []  # frame types in the order they arrived

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> WireClient:
        kwargs.setdefault("subprotocols", ["clubroom.v1"])
        kwargs.setdefault("max_size", None)
        return cls(await connect(url, **kwargs))

    async def _read(self) -> None:
        try:
            await self._dispatch_frames()
        except ConnectionClosed:
            pass
        finally:
            # Say who closed it and why: a test that fails on this under load
            # then tells a slow-consumer or keepalive close from a crash.
            first = {True: "the server", False: "the test"}.get(
                self.ws.protocol.close_rcvd_then_sent, "no one (the TCP connection dropped)"
            )
            closed = ConnectionError(
                f"the connection closed (code {self.ws.close_code}, "
                f"reason {self.ws.close_reason!r}; closed first by {first})"
            )
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(closed)

    async def wait_closed(self) -> int | None:
        """Wait for the server to close the connection; return the close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), TIMEOUT)
        return self.ws.close_code

    async def _dispatch_frames(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            self.arrivals.append(frame.get("type", ""))
            future = self._replies.pop(frame.get("id"), None) if "id" in frame else None
            if future is not None:
                future.set_result(frame)
            elif frame.get("type") in EVENT_TYPES:
                self.events.put_nowait(frame)
            else:
                self._unmatched.put_nowait(frame)

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (whatever its type)."""
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        await self.ws.send(json.dumps({"type": kind, "id": request_id, **fields}))
        return await asyncio.wait_for(future, TIMEOUT)

    async def ok(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Like ``call`` but fails the test on an error reply."""
        reply = await self.call(kind, **fields)
        assert reply["type"] != "error", reply
        return reply

    async def send_raw(self, data: str | bytes) -> dict[str, Any]:
        """Send a frame as is and return the next reply that matches no request."""
        await self.ws.send(data)
        return await self.unmatched()

    async def unmatched(self) -> dict[str, Any]:
        return await asyncio.wait_for(self._unmatched.get(), TIMEOUT)

    async def event(self, kind: str | None = None) -> dict[str, Any]:
        """The next event (of ``kind``, skipping others)."""
        while True:
            frame = await asyncio.wait_for(self.events.get(), TIMEOUT)
            if kind is None or frame["type"] == kind:
                return frame

    async def no_event(self, within: float = 0.3) -> None:
        """Assert that no event arrives for a little while."""
        try:
            frame = await asyncio.wait_for(self.events.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {frame}")

    def drain_events(self) -> list[dict[str, Any]]:
        frames = []
        while not self.events.empty():
            frames.append(self.events.get_nowait())
        return frames

    async def register(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        reply = await self.ok("register", username=username, password=password)
        self.username, self.token = reply["username"], reply["token"]
        return reply

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def in_room(clients: Sequence[WireClient], room: str = "Lobby") -> None:
    """The first client creates ``room``, the others join; every announcement is consumed."""
    await clients[0].ok("create_room", room=room)
    for joined, client in enumerate(clients[1:], start=1):
        await client.ok("join_room", room=room)
        for earlier in clients[:joined]:
            await earlier.event("member_joined")


async def resumed(url: str, token: str) -> WireClient:
    """A connected client, authenticated with an existing token."""
    client = await WireClient.open(url)
    await client.ok("resume", token=token)
    return client


async def user(url: str, username: str) -> WireClient:
    """A connected, registered client."""
    client = await WireClient.open(url)
    await client.register(username)
    return client

"""An asyncio client of the Clubroom protocol, with no UI.

The Textual app, the tests and bots all talk to a server through this class.
It matches replies to requests by id, turns server frames into a stream of
typed events, and hides outages: it reconnects with exponential backoff and
jitter, resumes the session with its token, re-joins its rooms from the last
message it saw, and re-sends unacknowledged messages with their original
nonce, so that every message is seen exactly once and nothing typed is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl as ssl_module
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

import protocol
from clubroom_tui.web_forwarding import forwarded_for_headers
from protocol import (
    DEFAULT_URL,
    HISTORY_DEFAULT,
    MAX_SERVER_FRAME_BYTES,
    SUBPROTOCOL,
    Changed,
    CreateRoom,
    Delete,
    Edit,
    Error,
    ErrorCode,
    History,
    HistoryPage,
    Joined,
    JoinRoom,
    LeaveRoom,
    Login,
    Logout,
    MemberJoined,
    MemberLeft,
    Message,
    MessageChanged,
    MessageEvent,
    Ok,
    ProtocolError,
    React,
    Register,
    Resume,
    RoomDeleted,
    Search,
    SearchPage,
    Send,
    Sent,
    ServerFrame,
    Welcome,
    check_text,
    decode_server_frame,
    encode,
    room_key,
)

log = logging.getLogger(__name__)

ReplyT = TypeVar("ReplyT", bound=ServerFrame)

STABLE_CONNECTION_SECONDS = 2.0
ROOM_DELETED = "An administrator deleted the room and its messages."
SERVER_RESTARTING = "The server is restarting; reconnecting…"
"""The state detail after the server closed with 1012 (service restart): it will be back."""
"""A connection that lasted this long is healthy; a reconnect after it starts without delay."""


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


# Messages a room's state holds in memory; older ones are fetched with history again.
KEEP_MESSAGES = 5000
# How long after our reconnect a member from before counts as returning, not joining.
RETURN_WINDOW_SECONDS = 120.0


class ClientError(Exception):
    """Base of everything this client raises; ``str()`` is a sentence for people."""


class NotConnected(ClientError):
    """The request was not sent because there is no usable connection right now."""


class ConnectionLost(ClientError):
    """The connection dropped before the reply arrived; the request may or may not have run."""


class RequestTimeout(ClientError):
    """No reply arrived within the timeout."""


class SendAbandoned(ClientError):
    """A queued message will never be sent (logged out, left the room, session ended)."""


class RequestFailed(ClientError):
    """The server answered with an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_frame(cls, frame: Error) -> RequestFailed:
        return cls(frame.code, frame.message, frame.retry_after)


# --------------------------------------------------------------------------
# State and events
# --------------------------------------------------------------------------


class ConnectionState(StrEnum):
    """Where the connection stands; ``OFFLINE`` waits for the next attempt (or is closed)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


@dataclass(frozen=True)
class StateChanged:
    """The connection state changed; ``detail`` says why, ``retry_in`` when offline."""

    state: ConnectionState
    detail: str
    retry_in: float | None = None


@dataclass(frozen=True)
class MessagesAdded:
    """New messages in a room, oldest first, each once.

    ``snapshot`` marks the latest messages a fresh join brings (old news);
    live messages and those caught up after an outage have it False.
    """

    room: str
    messages: tuple[Message, ...]
    snapshot: bool = False


@dataclass(frozen=True)
class MembersChanged:
    """A room's member list; ``joined``/``left`` name who caused it, None for a snapshot."""

    room: str
    members: tuple[str, ...]
    joined: str | None = None
    left: str | None = None


@dataclass(frozen=True)
class SendDelayed:
    """The server said to slow down; the queued message goes out after ``retry_after`` s."""

    room: str
    retry_after: float


@dataclass(frozen=True)
class RoomLost:
    """A room could not be re-joined after an outage (it was deleted meanwhile)."""

    room: str
    reason: str


@dataclass(frozen=True)
class SessionEnded:
    """The server no longer accepts our token; the user has to log in again."""

    reason: str


@dataclass(frozen=True)
class MessagesChanged:
    """Messages already known were edited, deleted or reacted to: their current state."""

    room: str
    messages: tuple[Message, ...]


# -- conversation events (issue 15) -----------------------------------------


@dataclass(frozen=True)
class RoomInfoChanged:
    """A room's owner or topic changed (``by`` set the topic; None for an owner change)."""

    room: str
    owner: str | None
    topic: str
    by: str | None = None


@dataclass(frozen=True)
class TypingChanged:
    """Who is typing in a room now (never us), in alphabetical order."""

    room: str
    typing: tuple[str, ...]


@dataclass(frozen=True)
class Mentioned:
    """A message in ``room`` mentions us."""

    room: str
    message_id: int
    author: str


@dataclass(frozen=True)
class ReadMoved:
    """Our read marker in a room moved (on this device or another)."""

    room: str
    up_to: int


@dataclass(frozen=True)
class InvitedTo:
    """Someone invited us into a private room (or opened a direct message with us)."""

    room: str
    by: str


ClientEvent = (
    StateChanged
    | MessagesAdded
    | MembersChanged
    | SendDelayed
    | RoomLost
    | SessionEnded
    | MessagesChanged
    | RoomInfoChanged
    | TypingChanged
    | Mentioned
    | ReadMoved
    | InvitedTo
)


@dataclass
class RoomState:
    """What the client knows of one joined room; messages are kept sorted by id."""

    name: str
    members: tuple[str, ...] = ()
    messages: list[Message] = field(default_factory=list)
    has_older: bool = False
    # Members from before our reconnect who are not back yet (casefolded name →
    # until when, monotonic): when they re-join after a server restart, that is
    # no news, so it is not announced as "joined".
    returning: dict[str, float] = field(default_factory=dict)
    # The room's position we have seen up to: message ids and change positions
    # (``Joined.cursor``, ``MessageChanged.position``): where a resume starts.
    cursor: int = 0
    owner: str | None = None
    topic: str = ""
    read_up_to: int = 0
    typing: tuple[str, ...] = ()

    def expect_back(self, before: tuple[str, ...], me: str, until: float) -> None:
        """Remember who was here before the outage and is missing from the new snapshot."""
        now_here = {m.casefold() for m in self.members}
        for member in before:
            folded = member.casefold()
            if folded not in now_here and folded != me.casefold():
                self.returning[folded] = until

    def is_return(self, member: str, now: float) -> bool:
        """True (once) if this member was here before our reconnect and is just coming back."""
        until = self.returning.pop(member.casefold(), None)
        return until is not None and now <= until

    @property
    def last_id(self) -> int | None:
        return self.messages[-1].id if self.messages else None

    @property
    def oldest_id(self) -> int | None:
        return self.messages[0].id if self.messages else None

    def add_newer(self, messages: list[Message]) -> list[Message]:
        """Append the messages newer than what we have; return those that were new."""
        last = self.last_id
        fresh = [m for m in messages if last is None or m.id > last]
        fresh.sort(key=lambda m: m.id)
        self.messages.extend(fresh)
        self._forget_oldest()
        return fresh

    def _forget_oldest(self) -> None:
        """Hold at most ``KEEP_MESSAGES`` (in batches); the server still has the rest."""
        excess = len(self.messages) - KEEP_MESSAGES
        if excess > KEEP_MESSAGES // 10:
            del self.messages[:excess]
            self.has_older = True

    @property
    def resume_after(self) -> int:
        """Resume after everything seen: the newest message and the newest change."""
        return max(self.cursor, self.last_id or 0)

    def replace(self, messages: list[Message]) -> list[Message]:
        """Swap in the current state of messages we hold; return those we held."""
        index = {m.id: i for i, m in enumerate(self.messages)}
        held = [m for m in messages if m.id in index]
        for message in held:
            self.messages[index[message.id]] = message
        return held

    def add_older(self, messages: list[Message]) -> list[Message]:
        """Prepend the messages older than what we have; return those that were new."""
        oldest = self.oldest_id
        older = sorted((m for m in messages if oldest is None or m.id < oldest), key=lambda m: m.id)
        self.messages[:0] = older
        return older


@dataclass
class PendingSend:
    """A message the user typed that the server has not confirmed yet."""

    room: str
    text: str
    nonce: str
    future: asyncio.Future[Message]
    reply_to: int | None = None


class EventStream:
    """One subscriber's queue of client events; iterate it with ``async for``."""

    _END: Any = object()

    def __init__(self, unsubscribe: Callable[[EventStream], None]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._unsubscribe = unsubscribe

    def put(self, event: ClientEvent) -> None:
        self._queue.put_nowait(event)

    def drain(self) -> list[ClientEvent]:
        """The events received but not read yet, without waiting (for tests and polling bots)."""
        events = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is self._END:
                self._queue.put_nowait(item)
                break
            events.append(item)
        return events

    def close(self) -> None:
        """Stop receiving; an ``async for`` over the stream ends."""
        self._unsubscribe(self)
        self._queue.put_nowait(self._END)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        item = await self._queue.get()
        if item is self._END:
            raise StopAsyncIteration
        return item


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits a random 50–100 % of initial·2ⁿ⁻¹."""

    initial: float = 0.5
    maximum: float = 15.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return ceiling * (0.5 + rng.random() / 2)


@dataclass
class _Pending:
    request: Any
    future: asyncio.Future[Any]


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------


class ClubroomClient:
    """A long-lived connection to one server that survives outages.

    Call ``start()`` once; it keeps (re)connecting in the background until
    ``close()``. Requests raise ``NotConnected`` while offline, except
    ``send``/``queue_send``, which queue and deliver once connected again.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        ssl: ssl_module.SSLContext | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("give at least one server URL")
        # The first URL names the deployment (saved sessions are kept under it);
        # connections go to the nodes in turn, starting at a random one.
        self.url = self.urls[0]
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.state = ConnectionState.OFFLINE
        self.state_detail = "Not started."
        self.username: str | None = None
        self.token: str | None = None
        self.is_admin = False  # welcome said so: offer the admin screen (the server decides)
        self.rooms: dict[str, RoomState] = {}
        self._ssl = ssl
        self._rng = rng or random.Random()
        self._turn = self._rng.randrange(len(self.urls))
        self._ws: ClientConnection | None = None
        self.server_restarting = False
        self._ready = asyncio.Event()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._outbox: deque[PendingSend] = deque()
        self._outbox_changed = asyncio.Event()
        self._subscribers: list[EventStream] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._tasks or self._closed:
            return
        self._tasks = [
            asyncio.create_task(self._supervise(), name="clubroom-connection"),
            asyncio.create_task(self._pump_outbox(), name="clubroom-outbox"),
        ]

    async def wait_ready(self) -> None:
        """Wait until connected (and, after an outage, resumed); wrap it in a timeout."""
        await self._ready.wait()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def close(self) -> None:
        """Close the connection and stop reconnecting; queued messages are abandoned."""
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._fail_pending(ConnectionLost("The client was closed."))
        self._abandon_outbox(lambda item: True, "The client was closed before it was sent.")
        self._set_state(ConnectionState.OFFLINE, "Closed.")
        for stream in list(self._subscribers):
            stream.close()

    def subscribe(self) -> EventStream:
        """A new stream that receives every event from now on."""
        stream = EventStream(self._subscribers.remove)
        self._subscribers.append(stream)
        return stream

    # -- accounts ----------------------------------------------------------

    async def register(self, username: str, password: str) -> Welcome:
        """Create an account and log in with it."""
        return await self._request(Register(username=username, password=password), Welcome)

    async def login(self, username: str, password: str) -> Welcome:
        return await self._request(Login(username=username, password=password), Welcome)

    async def resume(self, token: str) -> Welcome:
        """Log in with a token from an earlier ``welcome``."""
        return await self._request(Resume(token=token), Welcome)

    async def logout(self) -> None:
        """Revoke the token and leave every room; queued messages are abandoned."""
        await self._request(Logout(), Ok)

    def forget_session(self) -> None:
        """Drop the token and rooms locally (when ``logout`` could not reach the server)."""
        self._end_session()

    # -- rooms -------------------------------------------------------------

    async def create_room(self, room: str) -> Joined:
        return await self._request(CreateRoom(room=room), Joined)

    async def join_room(self, room: str) -> Joined:
        """Join a room: its latest messages and members arrive as events too."""
        return await self._request(JoinRoom(room=room), Joined)

    async def leave_room(self, room: str) -> None:
        await self._request(LeaveRoom(room=room), Ok)

    async def history(
        self, room: str, before: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Older messages; ``before`` defaults to the oldest message we hold."""
        state = self._room(room)
        if before is None:
            before = state.oldest_id if state and state.oldest_id is not None else 0
        request = History(room=room, before=before, limit=limit or HISTORY_DEFAULT)
        return await self._request(request, HistoryPage)

    def queue_send(self, room: str, text: str, reply_to: int | None = None) -> PendingSend:
        """Queue a message for a joined room; its future resolves with the stored message.

        Raises ``RequestFailed`` at once for text the server would refuse. The
        message survives outages and is sent exactly once (by nonce); awaiting
        the future through ``asyncio.shield`` keeps a cancelled waiter from
        cancelling the send.
        """
        state = self._room(room)
        if state is None:
            raise RequestFailed(ErrorCode.NOT_IN_ROOM, "You are not in that room.")
        try:
            check_text(text)
        except ProtocolError as exc:
            raise RequestFailed(exc.code, exc.message) from None
        item = PendingSend(
            room=state.name,
            text=text,
            nonce=uuid.uuid4().hex,
            future=asyncio.get_running_loop().create_future(),
            reply_to=reply_to,
        )
        self._outbox.append(item)
        self._outbox_changed.set()
        return item

    async def send(self, room: str, text: str) -> Message:
        """Send a message and wait until the server stored it (across outages)."""
        return await asyncio.shield(self.queue_send(room, text).future)

    def pending_sends(self, room: str) -> list[PendingSend]:
        """The messages for a room still waiting for the server, oldest first."""
        key = room_key(room)
        return [item for item in self._outbox if room_key(item.room) == key]

    # -- conversation (issue 15) --------------------------------------------

    async def mark_read(self, room: str, up_to: int) -> int:
        """Move our read marker forward; returns where it now stands."""
        reply = await self._request(protocol.MarkRead(room=room, up_to=up_to), protocol.ReadMarker)
        self._note_read(reply.room, reply.up_to)
        return reply.up_to

    async def my_rooms(self) -> protocol.MyRoomList:
        """Our rooms with unread and mention counts, and open invitations."""
        return await self._request(protocol.MyRooms(), protocol.MyRoomList)

    async def typing(self, room: str, state: protocol.TypingState) -> None:
        await self._request(protocol.Typing(room=room, state=state), Ok)

    async def set_topic(self, room: str, topic: str) -> None:
        await self._request(protocol.SetTopic(room=room, topic=topic), Ok)

    async def kick(self, room: str, username: str, reason: str = "") -> None:
        await self._request(protocol.Kick(room=room, username=username, reason=reason), Ok)

    async def ban(self, room: str, username: str, reason: str = "") -> None:
        await self._request(protocol.Ban(room=room, username=username, reason=reason), Ok)

    async def unban(self, room: str, username: str) -> None:
        await self._request(protocol.Unban(room=room, username=username), Ok)

    async def invite(self, room: str, username: str) -> None:
        await self._request(protocol.Invite(room=room, username=username), Ok)

    async def direct(self, username: str) -> Joined:
        """Open the direct-message room with ``username`` (created if need be)."""
        return await self._request(protocol.Direct(username=username), Joined)

    async def create_private_room(self, room: str) -> Joined:
        return await self._request(CreateRoom(room=room, private=True), Joined)

    # -- administration (issue 14; docs/protocol.md, "Administration") -------

    async def admin_rooms(self) -> list[protocol.AdminRoomInfo]:
        """Every room on the server with its member and message counts (admins only)."""
        return (await self._request(protocol.AdminRooms(), protocol.AdminRoomList)).rooms

    async def admin_users(self, query: str = "") -> protocol.AdminUserList:
        """Accounts whose name contains ``query`` (admins only)."""
        return await self._request(protocol.AdminUsers(query=query), protocol.AdminUserList)

    async def admin_delete_room(self, room: str) -> None:
        await self._request(protocol.AdminDeleteRoom(room=room), Ok)

    async def admin_disable_user(self, username: str) -> None:
        await self._request(protocol.AdminDisableUser(username=username), Ok)

    async def admin_enable_user(self, username: str) -> None:
        await self._request(protocol.AdminEnableUser(username=username), Ok)

    def _on_conversation(self, frame: Any) -> None:
        """Apply a conversation event to the room it names, then tell the subscribers."""
        state = self._room(frame.room)
        if isinstance(frame, protocol.Invited):
            self._emit(InvitedTo(frame.room, frame.by))
            return
        if state is None:
            return
        if isinstance(frame, protocol.Kicked):
            verb = "banned you from" if frame.banned else "removed you from"
            why = f": {frame.reason}" if frame.reason else "."
            reason = f"{frame.by} {verb} {state.name}{why}"
            self._forget_room(state.name, reason)
            self._emit(RoomLost(state.name, reason))
        elif isinstance(frame, protocol.TopicChanged):
            state.topic = frame.topic
            self._emit(RoomInfoChanged(state.name, state.owner, state.topic, by=frame.by))
        elif isinstance(frame, protocol.OwnerChanged):
            state.owner = frame.owner
            self._emit(RoomInfoChanged(state.name, state.owner, state.topic))
        elif isinstance(frame, protocol.TypingEvent):
            if frame.username == self.username:
                return  # our own typing, on another device
            typing = set(state.typing) - {frame.username}
            if frame.state is not protocol.TypingState.DONE:
                typing.add(frame.username)
            state.typing = tuple(sorted(typing, key=str.casefold))
            self._emit(TypingChanged(state.name, state.typing))
        elif isinstance(frame, protocol.MentionEvent):
            self._emit(Mentioned(state.name, frame.message_id, frame.author))
        elif isinstance(frame, protocol.ReadMarker):
            self._note_read(state.name, frame.up_to)

    def _note_read(self, room: str, up_to: int) -> None:
        state = self._room(room)
        if state is not None and up_to > state.read_up_to:
            state.read_up_to = up_to
            self._emit(ReadMoved(state.name, up_to))

    # -- requests ----------------------------------------------------------

    async def _request(self, request: Any, expected: type[ReplyT]) -> ReplyT:
        """Send a request on a ready connection and return its typed reply."""
        if not self._ready.is_set():
            raise NotConnected(self._not_connected_reason())
        return await self._call(request, expected)

    async def _call(self, request: Any, expected: type[ReplyT]) -> ReplyT:
        """Send a request on the current connection, ready or not (used while resuming)."""
        ws = self._ws
        if ws is None:
            raise NotConnected(self._not_connected_reason())
        self._next_id += 1
        request_id = self._next_id
        request = msgspec.structs.replace(request, id=request_id)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(request, future)
        try:
            await ws.send(encode(request).decode())  # a str goes out as a text frame
            async with asyncio.timeout(self.request_timeout):
                reply = await future
        except TimeoutError:
            raise RequestTimeout(
                f"The server did not answer within {self.request_timeout:g} seconds."
            ) from None
        except ConnectionClosed:
            raise ConnectionLost("The connection dropped before the server answered.") from None
        finally:
            self._pending.pop(request_id, None)
        if not isinstance(reply, expected):
            raise ClientError(f"The server answered {type(reply).__name__} unexpectedly.")
        return reply

    def _not_connected_reason(self) -> str:
        if self.state is ConnectionState.OFFLINE and self.state_detail:
            return f"Not connected to the server. {self.state_detail}"
        return "Not connected to the server yet; still trying."

    # -- connection --------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve the connection until it drops, wait, and again, until closed."""
        attempt = 0
        ever_connected = False
        unreachable = 0  # servers that failed in a row: the next one is tried at once
        while not self._closed:
            if ever_connected:
                lost = (
                    SERVER_RESTARTING
                    if self.server_restarting
                    else "Connection lost; reconnecting…"
                )
                self._set_state(ConnectionState.RECONNECTING, lost)
            else:
                self._set_state(ConnectionState.CONNECTING, f"Connecting to {self.current_url}…")
            try:
                ws = await self._open()
            except (OSError, InvalidHandshake, TimeoutError, InvalidURI) as exc:
                failed_url = self.current_url
                self._next_server()
                unreachable += 1
                if unreachable < len(self.urls):
                    continue
                unreachable = 0
                attempt += 1
                delay = self.backoff.delay(attempt, self._rng)
                reason = "the server is restarting" if self.server_restarting else None
                self._set_state(
                    ConnectionState.OFFLINE,
                    f"Cannot reach {failed_url} ({reason or describe_failure(exc)}); "
                    f"retrying in {delay:.1f} s.",
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                continue
            ever_connected = True
            unreachable = 0
            opened = asyncio.get_running_loop().time()
            restored = await self._serve(ws)
            lasted = asyncio.get_running_loop().time() - opened
            dropped_url = self.current_url
            self._next_server()  # e.g. that node is restarting (1012): try another
            if restored and lasted >= STABLE_CONNECTION_SECONDS:
                attempt = 0  # a good connection: come back at once, then back off
                continue
            attempt += 1  # refused after the handshake, or dropped at once: do not hammer
            delay = self.backoff.delay(attempt, self._rng)
            self._set_state(
                ConnectionState.OFFLINE,
                f"The connection to {dropped_url} keeps dropping; retrying in {delay:.1f} s.",
                retry_in=delay,
            )
            await asyncio.sleep(delay)

    @property
    def current_url(self) -> str:
        """The server this client connects (or is connected) to now."""
        return self.urls[self._turn]

    def _next_server(self) -> None:
        self._turn = (self._turn + 1) % len(self.urls)

    async def _open(self) -> ClientConnection:
        return await connect(
            self.current_url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None,
            ssl=self._ssl,
            open_timeout=self.connect_timeout,
            close_timeout=2,
            max_size=MAX_SERVER_FRAME_BYTES,
            # `clubroom web` only: the browser visitor's address (web_forwarding)
            additional_headers=forwarded_for_headers(),
        )

    async def _serve(self, ws: ClientConnection) -> bool:
        """Restore the session on a fresh connection, then read until it closes.

        Returns whether the restore worked (a failed one counts as a failed attempt).
        """
        self._ws = ws
        reader = asyncio.create_task(self._read(ws), name="clubroom-reader")
        restored = False
        try:
            await self._restore()
            restored = True
            self.server_restarting = False
            self._set_state(ConnectionState.CONNECTED, f"Connected to {self.current_url}.")
            self._ready.set()
            await reader
        except ClientError as exc:
            log.info("restoring the session failed: %s", exc)
        except Exception:
            log.exception("unexpected failure on the connection; reconnecting")
        finally:
            self._connection_lost()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await ws.close()
            if ws.close_code == CloseCode.SERVICE_RESTART:
                self.server_restarting = True  # 1012: it will be back; say so while waiting
            with contextlib.suppress(BaseException):
                await reader
            self._ws = None
        return restored

    async def _read(self, ws: ClientConnection) -> None:
        """Dispatch every frame until the connection closes."""
        try:
            async for data in ws:
                try:
                    frame = decode_server_frame(data)
                except msgspec.DecodeError as exc:
                    log.warning("ignoring an undecodable frame: %s", exc)
                    continue
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            self._connection_lost()

    def _connection_lost(self) -> None:
        """Mark the connection unusable at once, so no one sends on it meanwhile."""
        self._ready.clear()
        self._fail_pending(ConnectionLost("The connection dropped before the server answered."))

    def _fail_pending(self, error: ClientError) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(error)

    async def _restore(self) -> None:
        """After a reconnect: resume with the token and re-join rooms from the last id seen."""
        if self.token is None:
            return
        try:
            await self._call(Resume(token=self.token), Welcome)
        except RequestFailed as exc:
            if exc.code is not ErrorCode.INVALID_TOKEN:
                raise
            self._end_session()
            self._emit(SessionEnded(exc.message))
            return
        for state in list(self.rooms.values()):
            try:
                await self._rejoin(state)
            except RequestFailed as exc:
                self._forget_room(state.name, exc.message)
                self._emit(RoomLost(state.name, exc.message))

    async def _rejoin(self, state: RoomState) -> None:
        """Join again with ``after``, looping while the server says ``more``."""
        after = state.resume_after
        while True:
            joined = await self._call(JoinRoom(room=state.name, after=after), Joined)
            if not joined.more:
                return
            if joined.cursor is not None:
                after = joined.cursor
            else:
                after = joined.messages[-1].id if joined.messages else after

    # -- incoming frames ---------------------------------------------------

    def _dispatch(self, frame: ServerFrame) -> None:
        """Apply a frame to our state (synchronously, so events keep their order)."""
        if isinstance(frame, MessageEvent):
            self._on_message(frame.message)
        elif isinstance(frame, MemberJoined | MemberLeft):
            self._on_member_change(frame)
        elif isinstance(frame, MessageChanged):
            self._on_changed(frame)
        elif isinstance(frame, RoomDeleted):
            self._forget_room(frame.room, ROOM_DELETED)
            self._emit(RoomLost(frame.room, ROOM_DELETED))
        elif isinstance(frame, CONVERSATION_EVENTS) or (
            isinstance(frame, protocol.ReadMarker) and frame.id is None
        ):
            self._on_conversation(frame)
        else:
            self._on_reply(frame)

    def _on_reply(self, frame: Welcome | Ok | Joined | Sent | HistoryPage | Error) -> None:
        pending = self._pending.pop(frame.id, None) if isinstance(frame.id, int) else None
        if pending is None:
            log.debug("ignoring a reply nobody waits for: %r", frame)
            return
        if isinstance(frame, Error):
            if not pending.future.done():
                pending.future.set_exception(RequestFailed.from_frame(frame))
            return
        self._absorb(pending.request, frame)
        if not pending.future.done():
            pending.future.set_result(frame)

    def _absorb(self, request: Any, reply: ServerFrame) -> None:
        if isinstance(reply, Welcome):
            self.username, self.token = reply.username, reply.token
            self.is_admin = reply.admin
        elif isinstance(reply, Joined):
            self._on_joined(request, reply)
        elif isinstance(reply, HistoryPage):
            state = self._room(reply.room)
            if state is not None and request.before == state.oldest_id:
                state.add_older(reply.messages)
                state.has_older = reply.more
        elif isinstance(reply, Changed):
            self._apply_changes(reply.room, [reply.message])
        elif isinstance(reply, Ok) and isinstance(request, LeaveRoom):
            self._forget_room(request.room, "You left the room before it was sent.")
        elif isinstance(reply, Ok) and isinstance(request, Logout):
            self._end_session()

    def _on_joined(self, request: Any, joined: Joined) -> None:
        key = room_key(joined.room)
        state = self.rooms.get(key)
        fresh_join = getattr(request, "after", None) is None
        if state is None:
            state = self.rooms[key] = RoomState(name=joined.room)
            state.has_older = fresh_join and joined.more
        before = state.members
        state.members = tuple(sorted(joined.members, key=str.lower))
        state.owner, state.topic = joined.owner, joined.topic
        state.read_up_to = max(state.read_up_to, joined.read_up_to or 0)
        state.typing = tuple(t for t in state.typing if t in state.members)
        self._emit(RoomInfoChanged(state.name, state.owner, state.topic))
        if not fresh_join:
            until = time.monotonic() + RETURN_WINDOW_SECONDS
            state.expect_back(before, self.username or "", until)
        self._emit(MembersChanged(state.name, state.members))
        fresh = state.add_newer(joined.messages)
        if fresh:
            self._emit(MessagesAdded(state.name, tuple(fresh), snapshot=fresh_join))
        if joined.cursor is not None:
            state.cursor = max(state.cursor, joined.cursor)
        if joined.changes:
            self._apply_changes(state.name, joined.changes)

    def _on_message(self, message: Message) -> None:
        state = self._room(message.room)
        if state is None:
            return
        fresh = state.add_newer([message])
        if fresh:
            self._emit(MessagesAdded(state.name, tuple(fresh)))

    def _on_member_change(self, frame: MemberJoined | MemberLeft) -> None:
        state = self._room(frame.room)
        if state is None:
            return
        members = set(state.members)
        if isinstance(frame, MemberJoined):
            members.add(frame.username)
        else:
            members.discard(frame.username)
        state.members = tuple(sorted(members, key=str.lower))
        joined = isinstance(frame, MemberJoined)
        returning = state.is_return(frame.username, time.monotonic())
        if returning and joined:  # back after a server restart, as we are: not news
            self._emit(MembersChanged(state.name, state.members))
            return
        self._emit(
            MembersChanged(
                state.name,
                state.members,
                joined=frame.username if joined else None,
                left=None if joined else frame.username,
            )
        )

    # -- living messages: edit, delete, react, search (issue 16) -----------

    async def edit(self, room: str, message_id: int, text: str) -> Message:
        """Replace the text of one of our messages; the message as it is now."""
        try:
            check_text(text)
        except ProtocolError as exc:
            raise RequestFailed(exc.code, exc.message) from None
        reply = await self._request(Edit(room=room, message=message_id, text=text), Changed)
        return reply.message

    async def delete(self, room: str, message_id: int) -> Message:
        """Erase one of our messages (a "message deleted" tombstone stays)."""
        return (await self._request(Delete(room=room, message=message_id), Changed)).message

    async def react(
        self, room: str, message_id: int, emoji: str, *, remove: bool = False
    ) -> Message:
        """Add (or take back) a reaction; the message with its counts as they are now."""
        request = React(room=room, message=message_id, emoji=emoji, remove=remove)
        return (await self._request(request, Changed)).message

    async def search(
        self, room: str, query: str, *, order: str = "newest", offset: int = 0
    ) -> SearchPage:
        """A page of the room's messages containing the query's words."""
        request = Search(room=room, query=query, order=order, offset=offset)  # type: ignore[arg-type]
        return await self._request(request, SearchPage)

    def _on_changed(self, event: MessageChanged) -> None:
        """A change event: keep our own ``mine`` flags (events carry counts only)."""
        state = self._room(event.room)
        if state is None:
            return
        state.cursor = max(state.cursor, event.position)
        old = next((m for m in state.messages if m.id == event.message.id), None)
        by_me = event.by.casefold() == (self.username or "").casefold()
        message = with_mine(event.message, old, event.emoji if by_me else None, event.change)
        self._apply_changes(state.name, [message])

    def _apply_changes(self, room: str, messages: list[Message]) -> None:
        state = self._room(room)
        if state is None:
            return
        held = state.replace(messages)
        if held:
            self._emit(MessagesChanged(state.name, tuple(held)))

    # -- outbox ------------------------------------------------------------

    async def _pump_outbox(self) -> None:
        """Send queued messages one at a time, in order, retrying with the same nonce."""
        while True:
            await self._wait_for_outbox_work()
            item = self._outbox[0]
            if item.future.done():
                self._outbox.popleft()
                continue
            try:
                request = Send(
                    room=item.room, text=item.text, nonce=item.nonce, reply_to=item.reply_to
                )
                sent = await self._call(request, Sent)
            except (NotConnected, ConnectionLost, RequestTimeout):
                continue  # the same item goes again, same nonce, once ready
            except RequestFailed as exc:
                if exc.code is ErrorCode.RATE_LIMITED:
                    delay = exc.retry_after if exc.retry_after is not None else 1.0
                    self._emit(SendDelayed(item.room, delay))
                    await asyncio.sleep(delay)
                    continue
                self._finish_send(item, error=exc)
            except ClientError as exc:
                self._finish_send(item, error=exc)
            else:
                self._finish_send(item, message=sent.message)

    async def _wait_for_outbox_work(self) -> None:
        """Return once something is queued and the connection is ready for it."""
        while not (self._outbox and self._ready.is_set()):
            if not self._outbox:
                self._outbox_changed.clear()
                await self._outbox_changed.wait()
            else:
                await self._ready.wait()

    def _finish_send(
        self, item: PendingSend, *, message: Message | None = None, error: Exception | None = None
    ) -> None:
        if self._outbox and self._outbox[0] is item:
            self._outbox.popleft()
        if item.future.done():
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(message)  # type: ignore[arg-type]

    def _abandon_outbox(self, which: Callable[[PendingSend], bool], reason: str) -> None:
        keep: deque[PendingSend] = deque()
        for item in self._outbox:
            if which(item):
                if not item.future.done():
                    item.future.set_exception(SendAbandoned(reason))
            else:
                keep.append(item)
        self._outbox = keep

    # -- helpers -----------------------------------------------------------

    def _room(self, room: str) -> RoomState | None:
        return self.rooms.get(room_key(room))

    def _forget_room(self, room: str, reason: str) -> None:
        key = room_key(room)
        self.rooms.pop(key, None)
        self._abandon_outbox(lambda item: room_key(item.room) == key, reason)

    def _end_session(self) -> None:
        self.username = self.token = None
        self.is_admin = False
        self.rooms.clear()
        self._abandon_outbox(lambda item: True, "You were logged out before it was sent.")

    def _set_state(
        self, state: ConnectionState, detail: str, retry_in: float | None = None
    ) -> None:
        self.state, self.state_detail = state, detail
        self._emit(StateChanged(state, detail, retry_in))

    def _emit(self, event: ClientEvent) -> None:
        for stream in self._subscribers:
            stream.put(event)


CONVERSATION_EVENTS = (
    protocol.Invited,
    protocol.Kicked,
    protocol.TopicChanged,
    protocol.OwnerChanged,
    protocol.TypingEvent,
    protocol.MentionEvent,
)


def describe_failure(exc: BaseException) -> str:
    """A short human reason for a failed connection attempt."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return "its certificate is not trusted; pass --cafile"
    if isinstance(exc, ssl_module.SSLError):
        return "TLS failed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, InvalidStatus):
        return f"HTTP status {exc.response.status_code}"
    if isinstance(exc, InvalidURI):
        return "invalid address"
    if isinstance(exc, InvalidHandshake):
        return "not a Clubroom server"
    return str(exc) or type(exc).__name__


def with_mine(new: Message, old: Message | None, my_emoji: str | None, change: str) -> Message:
    """``new`` with the ``mine`` flags we knew, updated by our own reaction if it was ours."""
    mine = {r.emoji for r in (old.reactions or []) if r.mine} if old else set()
    if my_emoji is not None:
        if change == "reacted":
            mine.add(my_emoji)
        elif change == "unreacted":
            mine.discard(my_emoji)
    if not new.reactions:
        return new
    reactions = [msgspec.structs.replace(r, mine=r.emoji in mine) for r in new.reactions]
    return msgspec.structs.replace(new, reactions=reactions)

"""The chat itself: what each request does, in the words of the contract.

The session hands every decoded request to ``ChatService.handle``; the
service checks the rules, talks to the store and the room registry, and
returns the reply (or raises ``ProtocolError``). It never touches a socket
except through ``Peer.send``, and never formats an error frame itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import protocol
from clubroom_server.auth import PasswordHasher, SlidingWindow, TokenBucket, new_token, token_hash
from clubroom_server.bus import BusUnavailable
from clubroom_server.cluster import ClusterNode, RoomGone
from clubroom_server.config import Settings
from clubroom_server.peer import Peer, fanout
from clubroom_server.rooms import Room, Rooms
from clubroom_server.store import (
    DuplicateError,
    MessageRecord,
    Store,
    StoreError,
    UnavailableError,
    UserRecord,
)
from protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

Handler = Callable[[Peer, Any], Awaitable[protocol.Reply | None]]
NonceKey = tuple[int, int, str]

NOT_SAVED = "The server could not save that just now; please try again in a moment."
BUS_UNAVAILABLE = "The server lost touch with the rest of the cluster for a moment; please retry."
UNAVAILABLE = "The server's database is out of reach for a moment; nothing was done. Please retry."


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_wire(room: Room, record: MessageRecord) -> protocol.Message:
    return protocol.Message(
        id=record.id,
        room=room.name,
        author=record.author,
        text=record.text,
        at=protocol.format_time(record.at_ms),
    )


class ChatService:
    """Accounts, rooms and messages: one method per request type."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hasher: PasswordHasher,
        cluster: ClusterNode | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._hasher = hasher
        self.cluster = cluster
        self.rooms = Rooms(
            settings.grace,
            fanout,  # type: ignore[arg-type]
            self._room_deleted,
            on_member_gone=cluster.member_gone if cluster is not None else None,
        )
        if cluster is not None:
            cluster.bind(self.rooms, _message_event)
        self._failed_by_user = SlidingWindow(
            settings.login_failures_per_user, settings.login_window
        )
        self._failed_by_address = SlidingWindow(
            settings.login_failures_per_address, settings.login_window
        )
        self._send_bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        self._room_bucket = TokenBucket(settings.room_rate_limit, settings.room_rate_burst)
        self._registering: set[str] = set()
        self._nonce_claims: dict[NonceKey, asyncio.Future[protocol.Message]] = {}
        self._creating: set[str] = set()
        self._deleting: dict[str, asyncio.Task[None]] = {}
        self._last_at_ms = 0
        self._handlers: dict[type, Handler] = {
            protocol.Register: self.register,
            protocol.Login: self.login,
            protocol.Resume: self.resume,
            protocol.Logout: self.logout,
            protocol.CreateRoom: self.create_room,
            protocol.JoinRoom: self.join_room,
            protocol.LeaveRoom: self.leave_room,
            protocol.Send: self.send,
            protocol.History: self.history,
        }

    async def start(self) -> None:
        """Restore stored rooms (each gets one grace period) and drop expired tokens."""
        await self._store.purge_expired_tokens(now_ms())
        if self.cluster is not None:
            # A node serves rooms on demand; presence in the database says who is in them.
            await self.cluster.start()
            return
        for record in await self._store.all_rooms():
            self.rooms.add(record, expire_if_unjoined=True)
        log.info("restored %d room(s) from the database", len(self.rooms))

    def close(self) -> None:
        self.rooms.close()

    async def handle(self, peer: Peer, request: protocol.Request) -> protocol.Reply | None:
        """Run one request; authentication is checked here, once for all room requests."""
        if peer.user is None and request.__struct_config__.tag not in protocol.AUTH_FREE_TYPES:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "Log in or register first.")
        try:
            return await self._handlers[type(request)](peer, request)
        except UnavailableError:
            raise ProtocolError(ErrorCode.UNAVAILABLE, UNAVAILABLE) from None
        except BusUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, BUS_UNAVAILABLE) from None
        except RoomGone as gone:
            raise ProtocolError(
                ErrorCode.NO_SUCH_ROOM, f"There is no room called {gone.args[0]!r}."
            ) from None
        except StoreError:
            raise ProtocolError(ErrorCode.INTERNAL_ERROR, NOT_SAVED) from None

    def disconnect(self, peer: Peer) -> None:
        """A connection dropped: its memberships enter the grace period."""
        for room in peer.rooms.values():
            self.rooms.detach(room, peer, grace=True)
            self._cluster_connection_gone(room)
        peer.rooms.clear()

    # --------------------------------------------------------------- accounts

    async def register(self, peer: Peer, request: protocol.Register) -> protocol.Reply:
        _require_anonymous(peer)
        username = protocol.check_username(request.username)
        protocol.check_password(request.password, username)
        key = protocol.username_key(username)
        if key in self._registering or await self._store.user_by_key(key) is not None:
            raise ProtocolError(
                ErrorCode.USERNAME_TAKEN, f"The username {username!r} is taken; pick another."
            )
        self._registering.add(key)
        try:
            password_hash = await self._hasher.hash(request.password)
            user = await self._store.add_user(username, key, password_hash, now_ms())
        except DuplicateError:
            raise ProtocolError(
                ErrorCode.USERNAME_TAKEN, f"The username {username!r} is taken; pick another."
            ) from None
        finally:
            self._registering.discard(key)
        log.info("registered user %s", username)
        return await self._welcome(peer, user, request)

    async def login(self, peer: Peer, request: protocol.Login) -> protocol.Reply:
        _require_anonymous(peer)
        key = protocol.username_key(request.username)
        self._check_throttle(key, peer.address)
        user = await self._store.user_by_key(key)
        password_hash = user.password_hash if user else None
        if not await self._hasher.verify(password_hash, request.password) or user is None:
            self._failed_by_user.record(key)
            self._failed_by_address.record(peer.address)
            raise ProtocolError(
                ErrorCode.INVALID_CREDENTIALS, "That username and password do not match."
            )
        self._failed_by_user.clear(key)
        if self._hasher.needs_rehash(user.password_hash):
            await self._store.set_password_hash(user.id, await self._hasher.hash(request.password))
        return await self._welcome(peer, user, request)

    async def resume(self, peer: Peer, request: protocol.Resume) -> protocol.Reply:
        _require_anonymous(peer)
        self._check_throttle(None, peer.address)
        hashed = token_hash(request.token)
        found = await self._store.user_by_token(hashed, now_ms())
        if found is None:
            self._failed_by_address.record(peer.address)
            raise ProtocolError(
                ErrorCode.INVALID_TOKEN, "This session has expired or ended; please log in again."
            )
        user, expires_ms = found
        self._authenticate(peer, user, hashed)
        return protocol.Welcome(
            id=request.id,
            username=user.username,
            token=request.token,
            expires_at=protocol.format_time(expires_ms),
        )

    async def logout(self, peer: Peer, request: protocol.Logout) -> protocol.Reply:
        if peer.user is not None:
            for room in list(peer.rooms.values()):
                self._leave(peer, room)
            hashed, peer.user, peer.token_hash = peer.token_hash, None, None
            if hashed:
                await self._store.revoke_token(hashed)
        return protocol.Ok(id=request.id)

    async def _welcome(
        self, peer: Peer, user: UserRecord, request: protocol.Register | protocol.Login
    ) -> protocol.Reply:
        token = new_token()
        hashed = token_hash(token)
        expires_ms = now_ms() + protocol.TOKEN_LIFETIME_SECONDS * 1000
        await self._store.add_token(hashed, user.id, expires_ms)
        self._authenticate(peer, user, hashed)
        return protocol.Welcome(
            id=request.id,
            username=user.username,
            token=token,
            expires_at=protocol.format_time(expires_ms),
        )

    @staticmethod
    def _authenticate(peer: Peer, user: UserRecord, hashed: str) -> None:
        peer.user, peer.token_hash = user, hashed

    def _check_throttle(self, user_key: str | None, address: str) -> None:
        waits = [self._failed_by_address.retry_after(address)]
        if user_key is not None:
            waits.append(self._failed_by_user.retry_after(user_key))
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ATTEMPTS,
                f"Too many failed attempts; try again in {wait:.0f} seconds.",
                retry_after=round(wait, 3),
            )

    # ------------------------------------------------------------------ rooms

    async def create_room(self, peer: Peer, request: protocol.CreateRoom) -> protocol.Reply | None:
        """Store the room first; only then does it exist for anyone (a failure leaves no trace).

        While the row is being written the name is reserved: another creation
        gets ``room_exists`` and a join ``no_such_room``, as if it did not
        exist yet, which it does not.
        """
        name = protocol.check_room_name(request.room)
        key = protocol.room_key(name)
        exists = ProtocolError(ErrorCode.ROOM_EXISTS, f"A room called {name!r} already exists.")
        if self.rooms.get(key) is not None or key in self._creating:
            raise exists
        self._take(self._room_bucket, peer)
        self._creating.add(key)
        try:
            await self._deleted(key)
            record = await self._store.add_room(name, key, now_ms())
        except DuplicateError:
            raise exists from None
        finally:
            self._creating.discard(key)
        room = self.rooms.add(record)
        self._enter(peer, room)
        try:
            members = await self._cluster_enter(peer, room)
        except BaseException:
            self._leave(peer, room)
            raise
        self._reply_joined(
            peer, room, request.id, [], more=False, last_id=0, live=True, members=members
        )
        return None

    async def join_room(self, peer: Peer, request: protocol.JoinRoom) -> protocol.Reply | None:
        name = protocol.check_room_name(request.room)
        room = self.rooms.get(protocol.room_key(name)) or await self._cluster_room(name)
        if room is None:
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"There is no room called {name!r}.")
        was_member = room.key in peer.rooms
        if not was_member:
            self._take(self._room_bucket, peer)
        self._enter(peer, room)
        try:
            members = await self._cluster_enter(peer, room)
            if request.after is None:
                records, more = await self._store.latest_messages(room.id, protocol.JOIN_LATEST)
            else:
                records, more = await self._store.messages_after(
                    room.id, request.after, protocol.JOIN_AFTER_MAX
                )
        except (StoreError, BusUnavailable, RoomGone):
            if not was_member:
                self._leave(peer, room)
            raise
        last_id = records[-1].id if records else (request.after or 0)
        messages = [to_wire(room, record) for record in records]
        # Only a catch-up page (``after`` with more to come) keeps the connection
        # silent; without ``after``, ``more`` only says that older history exists.
        catching_up = request.after is not None and more
        self._reply_joined(
            peer,
            room,
            request.id,
            messages,
            more=more,
            last_id=last_id,
            live=not catching_up,
            members=members,
        )
        return None

    async def leave_room(self, peer: Peer, request: protocol.LeaveRoom) -> protocol.Reply:
        room = self._joined_room(peer, request.room)
        self._leave(peer, room)
        if self.cluster is not None:
            await self.cluster.settled(room, peer)
        return protocol.Ok(id=request.id)

    def _enter(self, peer: Peer, room: Room) -> None:
        peer.rooms[room.key] = room
        self.rooms.attach(room, peer)

    def _leave(self, peer: Peer, room: Room) -> None:
        peer.rooms.pop(room.key, None)
        self.rooms.detach(room, peer, grace=False)
        self._cluster_connection_gone(room)

    def _reply_joined(
        self,
        peer: Peer,
        room: Room,
        request_id: protocol.RequestId | None,
        messages: list[protocol.Message],
        *,
        more: bool,
        last_id: int,
        live: bool,
        members: list[str] | None = None,
    ) -> None:
        """Send ``joined`` first, then let the room's buffered events follow it."""
        joined = protocol.Joined(
            id=request_id,
            room=room.name,
            members=room.member_names() if members is None else members,
            messages=messages,
            more=more,
        )
        peer.send(protocol.encode(joined))
        self.rooms.go_live(room, peer, last_id, live=live)

    def _joined_room(self, peer: Peer, name: str) -> Room:
        key = protocol.room_key(protocol.check_room_name(name))
        room = peer.rooms.get(key)
        if room is None:
            raise ProtocolError(
                ErrorCode.NOT_IN_ROOM, f"Join the room {name.strip()!r} before using it."
            )
        return room

    def _room_deleted(self, room: Room) -> None:
        """The registry dropped an empty room: delete its row, and let a re-creation wait."""
        if self.cluster is not None:
            self.cluster.room_unused(room)
            return
        log.info("room %r is empty; deleting it and its messages", room.name)
        task = asyncio.create_task(self._delete_room(room), name=f"delete-room-{room.id}")
        self._deleting[room.key] = task
        task.add_done_callback(lambda done: self._forget_deletion(room.key, done))

    async def _delete_room(self, room: Room) -> None:
        try:
            await self._store.delete_room(room.id)
        except StoreError as exc:
            log.error("deleting the empty room %r failed: %s", room.name, exc)

    def _forget_deletion(self, key: str, task: asyncio.Task[None]) -> None:
        if self._deleting.get(key) is task:
            del self._deleting[key]

    async def _deleted(self, key: str) -> None:
        """Wait until a deletion of the room called ``key`` (if any) is written."""
        task = self._deleting.get(key)
        if task is not None:
            await asyncio.shield(task)

    async def finish_deletions(self) -> None:
        """Wait for every room deletion in flight (before the store closes)."""
        while self._deleting:
            await asyncio.gather(*self._deleting.values())

    # --------------------------------------------------------------- messages

    async def send(self, peer: Peer, request: protocol.Send) -> protocol.Reply:
        room = self._joined_room(peer, request.room)
        text = protocol.check_text(request.text)
        if request.nonce is None:
            message = await self._store_message(peer, room, text, None)
        else:
            message = await self._send_once(peer, room, text, request.nonce)
        return protocol.Sent(id=request.id, room=room.name, message=message)

    async def _send_once(self, peer: Peer, room: Room, text: str, nonce: str) -> protocol.Message:
        """Store a message unless this user's nonce already stored one in this room.

        A send racing another with the same nonce waits for it (an in-memory
        claim); one whose nonce is already in the database is refused by its
        unique index, and answered with the stored message. So the common
        case costs no extra read.
        """
        assert peer.user is not None
        key: NonceKey = (room.id, peer.user.id, nonce)
        claim = self._nonce_claims.get(key)
        if claim is not None:
            return await asyncio.shield(claim)
        claim = self._nonce_claims[key] = asyncio.get_running_loop().create_future()
        try:
            message = await self._store_or_find(peer, room, text, nonce)
        except BaseException as exc:
            claim.set_exception(exc)
            claim.exception()  # whoever waits re-raises it; nobody else must
            raise
        else:
            claim.set_result(message)
            return message
        finally:
            del self._nonce_claims[key]

    async def _store_or_find(
        self, peer: Peer, room: Room, text: str, nonce: str
    ) -> protocol.Message:
        assert peer.user is not None
        try:
            return await self._store_message(peer, room, text, nonce)
        except DuplicateError:
            earlier = await self._store.message_by_nonce(room.id, peer.user.id, nonce)
            if earlier is None:
                raise
            return to_wire(room, earlier)

    async def _store_message(
        self, peer: Peer, room: Room, text: str, nonce: str | None
    ) -> protocol.Message:
        """Store durably, announce to the room right after the commit, then answer.

        The store calls ``announce`` in commit order, which within a room is id
        order, so every member sees the room's messages in the order stored.
        """
        assert peer.user is not None
        self._take(self._send_bucket, peer)
        if self.cluster is not None:  # the same budget across every node
            _raise_if_limited(await self.cluster.send_wait(peer.user_key))

        def announce(record: MessageRecord) -> None:
            event = _message_event(room, record)
            if self.cluster is None:
                self.rooms.publish_message(room, record.id, event)
            else:
                self.cluster.stored(record, event)

        record = await self._store.append_message(
            room.id, peer.user.id, peer.user.username, text, self._now(), nonce, announce
        )
        return to_wire(room, record)

    async def history(self, peer: Peer, request: protocol.History) -> protocol.Reply:
        room = self._joined_room(peer, request.room)
        records, more = await self._store.messages_before(room.id, request.before, request.limit)
        return protocol.HistoryPage(
            id=request.id,
            room=room.name,
            messages=[to_wire(room, record) for record in records],
            more=more,
        )

    def _now(self) -> int:
        """Wall-clock milliseconds that never go backwards, like message ids."""
        self._last_at_ms = max(self._last_at_ms, now_ms())
        return self._last_at_ms

    def _take(self, bucket: TokenBucket, peer: Peer) -> None:
        _raise_if_limited(bucket.take(peer.user_key))

    # ---------------------------------------------------------------- cluster
    # Only with ``--bus`` (see cluster.py): one process never runs any of this.

    async def close_cluster(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()

    async def _cluster_enter(self, peer: Peer, room: Room) -> list[str] | None:
        """In a cluster: serve the room, record the membership; the members to reply with."""
        if self.cluster is None:
            return None
        return await self.cluster.enter(room, peer)

    def _cluster_connection_gone(self, room: Room) -> None:
        if self.cluster is not None:
            self.cluster.connection_gone(room)

    async def _cluster_room(self, name: str) -> Room | None:
        """In a cluster, a room another node created is found in the database."""
        if self.cluster is None:
            return None
        return await self.cluster.find_room(protocol.room_key(name))


def _raise_if_limited(wait: float | None) -> None:
    if wait is not None:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"Slow down: try again in {wait:.1f} seconds.",
            retry_after=round(wait, 3),
        )


def _message_event(room: Room, record: MessageRecord) -> bytes:
    """The ``message`` event of a stored message, encoded once for every recipient."""
    return protocol.encode(protocol.MessageEvent(message=to_wire(room, record)))


def _require_anonymous(peer: Peer) -> None:
    if peer.user is not None:
        raise ProtocolError(
            ErrorCode.ALREADY_AUTHENTICATED, "You are already logged in; log out first."
        )

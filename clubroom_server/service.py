"""The chat itself: what each request does, in the words of the contract.

The session hands every decoded request to ``ChatService.handle``; the
service checks the rules, talks to the store and the room registry, and
returns the reply (or raises ``ProtocolError``). It never touches a socket
except through ``Peer.send``, and never formats an error frame itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import protocol
from clubroom_server import life, metrics
from clubroom_server.auth import (
    AttemptWindow,
    HasherBusy,
    PasswordHasher,
    TokenBucket,
    new_token,
    token_hash,
)
from clubroom_server.bus import BusUnavailable
from clubroom_server.cluster import ClusterNode, RoomGone
from clubroom_server.config import Settings
from clubroom_server.life import MessageLife
from clubroom_server.limits import Attempts, Bucket, Ticket
from clubroom_server.peer import Peer, PeerSet, fanout
from clubroom_server.rooms import Room, Rooms
from clubroom_server.store import (
    DuplicateError,
    MessageRecord,
    RoomRecord,
    Store,
    StoreError,
    UnavailableError,
    UserRecord,
)
from protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

Handler = Callable[[Peer, Any], Awaitable[protocol.Reply | None]]


class ConversationHooks(Protocol):
    """What the conversation features (``conversation.Conversation``) are told, and when."""

    async def admit(self, peer: Peer, room: Room) -> None: ...

    async def created(self, peer: Peer, room: Room) -> None: ...

    async def entered(self, peer: Peer, room: Room) -> Any: ...

    async def may_enter(self, peer: Peer, room: Room | None) -> bool: ...

    async def left(self, peer: Peer, room: Room) -> None: ...

    def disconnected(self, peer: Peer) -> None: ...

    async def sent(self, peer: Peer, room: Room, message: protocol.Message) -> None: ...

    def room_gone(self, room: Room) -> None: ...


NonceKey = tuple[int, int, str]

NOT_SAVED = "The server could not save that just now; please try again in a moment."
BUS_UNAVAILABLE = "The server lost touch with the rest of the cluster for a moment; please retry."
UNAVAILABLE = "The server's database is out of reach for a moment; nothing was done. Please retry."
DELETE_RETRY_FIRST = 0.5  # seconds before retrying a room deletion the database could not take
DELETE_RETRY_MAX = 10.0
DELETE_WAIT = 2.0  # seconds a create_room waits for the deletion of a room of the same name


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_wire(
    room: Room, record: MessageRecord, reply: protocol.ReplyRef | None = None
) -> protocol.Message:
    """A new message as it travels (``life.wire`` adds what changes may have added)."""
    return life.wire(room, record, (), reply)


class ChatService:
    """Accounts, rooms and messages: one method per request type."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hasher: PasswordHasher,
        peers: PeerSet,
        cluster: ClusterNode | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._hasher = hasher
        self._peers = peers
        self.cluster = cluster
        self.rooms = Rooms(
            settings.grace,
            fanout,  # type: ignore[arg-type]
            self._room_deleted,
            on_member_gone=cluster.member_gone if cluster is not None else None,
        )
        if cluster is not None:
            cluster.bind(self.rooms, self._encode_rows, self._session_ended_elsewhere)
        self._failed_by_user = AttemptWindow(
            settings.login_failures_per_user, settings.login_window
        )
        self._failed_by_address = AttemptWindow(
            settings.login_failures_per_address, settings.login_window
        )
        self._registered_by_address = AttemptWindow(
            settings.registrations_per_address, settings.registration_window
        )
        self._registered = AttemptWindow(settings.registrations_total, settings.registration_window)
        # The same limits, cluster-wide on a cluster (limits.py): a client cannot
        # multiply its budget by connecting to several nodes.
        shared = cluster.limits if cluster is not None else None
        self._login_by_user = Attempts("login-user", self._failed_by_user, shared)
        self._login_by_address = Attempts("login-address", self._failed_by_address, shared)
        self._register_by_address = Attempts(
            "register-address", self._registered_by_address, shared
        )
        self._register_total = Attempts("register-total", self._registered, shared)
        self._pruner: asyncio.TimerHandle | None = None
        self._send_bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        self._room_bucket = TokenBucket(settings.room_rate_limit, settings.room_rate_burst)
        self._room_rate = Bucket("room", self._room_bucket, shared)
        self._change_rate = Bucket("send", self._send_bucket, shared)  # one budget with sends
        self._registering: set[str] = set()
        self._nonce_claims: dict[NonceKey, asyncio.Future[protocol.Message]] = {}
        self._creating: set[str] = set()
        self._deleting: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._last_at_ms = 0
        self.conversation: ConversationHooks | None = None
        # Set by the admin requests (manage/requests.py): whether an account has
        # the admin role, so ``welcome`` can tell the client to offer its admin screen.
        self.is_admin: Callable[[int], Awaitable[bool]] | None = None
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
        # Edits, deletions, reactions, replies and search (issue 16): life.py.
        self.life = MessageLife(self, store, settings.rate_limit, settings.rate_burst)
        self.add_handlers(self.life.handlers)

    async def start(self) -> None:
        """Restore stored rooms (each gets one grace period) and drop expired tokens."""
        await self._store.purge_expired_tokens(now_ms())
        if self.cluster is not None:
            # A node serves rooms on demand; presence in the database says who is in them.
            await self.cluster.start()
        else:
            for record in await self._store.all_rooms():
                self._restore_room(record)
            log.info("restored %d room(s) from the database", len(self.rooms))
        self._prune_throttles()

    def _restore_room(self, record: RoomRecord) -> None:
        """Register a stored room under today's key (its stored one may predate look-alikes)."""
        key = protocol.room_key(record.name)
        shadowed = self.rooms.get(key)
        if shadowed is not None:
            log.warning(
                "stored rooms %r and %r now count as one name; only the latter can be joined "
                "and the former is deleted after the grace period",
                shadowed.name,
                record.name,
            )
        self.rooms.add(dataclasses.replace(record, key=key), expire_if_unjoined=True)

    def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
        self.rooms.close()
        self._stopping.set()

    @property
    def throttle_windows(self) -> tuple[AttemptWindow, ...]:
        """Every table of attempts per user or address (their sizes are bounded)."""
        return (
            self._failed_by_user,
            self._failed_by_address,
            self._registered_by_address,
            self._registered,
        )

    @property
    def throttle_buckets(self) -> tuple[TokenBucket, ...]:
        """Every rate table per user (sends and changes, rooms, searches)."""
        return (self._send_bucket, self._room_bucket, self.life.search_bucket)

    def _prune_throttles(self) -> None:
        """Forget expired attempts and refilled buckets on a timer, so an idle server holds none.

        Both tables are keyed by users and addresses that come and go; without
        this, every user who ever sent or joined would stay in them for good.
        """
        for window in self.throttle_windows:
            window.prune()
        for bucket in self.throttle_buckets:
            bucket.prune()
        interval = min(self._settings.login_window, self._settings.registration_window)
        self._pruner = asyncio.get_running_loop().call_later(interval, self._prune_throttles)

    def connections_of(self, user_key: str) -> list[Peer]:
        """Every connection signed in as this user (a scan: used for rare events only)."""
        return [peer for peer in self._peers if peer.user is not None and peer.user_key == user_key]

    def all_rooms(self) -> list[Room]:
        return self.rooms.all()

    def add_handlers(self, handlers: dict[type, Handler]) -> None:
        """Serve more request types (the admin requests live in ``manage/requests.py``)."""
        self._handlers.update(handlers)

    def reconfigure(self, settings: Settings) -> None:
        """New rate and login limits (SIGHUP), kept counts and all; grace applies to new timers."""
        self._settings = settings
        self.rooms.grace = settings.grace
        self._failed_by_user.limit = settings.login_failures_per_user
        self._failed_by_user.window = settings.login_window
        self._failed_by_address.limit = settings.login_failures_per_address
        self._failed_by_address.window = settings.login_window
        for bucket, rate, burst in (
            (self._send_bucket, settings.rate_limit, settings.rate_burst),
            (self._room_bucket, settings.room_rate_limit, settings.room_rate_burst),
        ):
            bucket.rate, bucket.burst = rate, max(1, burst)

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
        except StoreError as exc:
            # The client learns only that it failed; the operator needs to know why.
            log.warning("a %s request failed in the store: %s", type(request).__name__, exc)
            raise ProtocolError(ErrorCode.INTERNAL_ERROR, NOT_SAVED) from None

    def disconnect(self, peer: Peer) -> None:
        """A connection dropped: its memberships enter the grace period."""
        if self.conversation is not None:
            self.conversation.disconnected(peer)
        for room in peer.rooms.values():
            self.rooms.detach(room, peer, grace=True)
            self._cluster_connection_gone(room)
        peer.rooms.clear()

    # --------------------------------------------------------------- accounts

    async def register(self, peer: Peer, request: protocol.Register) -> protocol.Reply:
        """Create an account; every try (a taken name too) costs the address's budget."""
        _require_anonymous(peer)
        username = protocol.check_username(request.username)
        protocol.check_password(request.password, username)
        key = protocol.username_key(username)
        async with (
            _attempt([(self._register_by_address, peer.address)]) as per_address,
            _attempt([(self._register_total, "")]) as in_total,
        ):
            per_address.keep = True  # a probe that finds the name taken costs the same
            if key in self._registering or await self._user_named(username) is not None:
                raise _name_taken(username)
            self._registering.add(key)
            try:
                password_hash = await self._hash(request.password, peer.address)
                user = await self._store.add_user(username, key, password_hash, now_ms())
            except DuplicateError:
                raise _name_taken(username) from None
            finally:
                self._registering.discard(key)
            in_total.keep = True
        log.info("registered user %s from %s", username, peer.address)
        return await self._welcome(peer, user, request)

    async def login(self, peer: Peer, request: protocol.Login) -> protocol.Reply:
        """Check a password; each attempt is reserved against both limits before verifying."""
        _require_anonymous(peer)
        key = _login_key(request.username)
        windows = [(self._login_by_address, peer.address)]
        if key is not None:
            windows.append((self._login_by_user, key))
        async with _attempt(windows) as attempt:
            attempt.keep = True  # until the password proves right
            if key is None:  # no such account can exist; nothing to verify
                raise _no_match()
            user = await self._user_named(request.username)
            password_hash = user.password_hash if user else None
            if not await self._verify(password_hash, request.password, peer.address):
                raise _no_match()
            assert user is not None
            attempt.keep = False
        await self._login_by_user.clear(key)
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await self._hash(request.password, peer.address)
            await self._store.set_password_hash(user.id, new_hash)
        return await self._welcome(peer, user, request)

    async def _user_named(self, username: str) -> UserRecord | None:
        """The account a (valid) username names, look-alikes included.

        Accounts stored before look-alike keys carry the old lower-case key
        until the database's keys are recomputed; they are found by it too.
        """
        user = await self._store.user_by_key(protocol.username_key(username))
        legacy = protocol.legacy_username_key(username)
        if user is None and legacy != protocol.username_key(username):
            user = await self._store.user_by_key(legacy)
        return user

    async def _verify(self, password_hash: str | None, password: str, address: str) -> bool:
        try:
            return await self._hasher.verify(password_hash, password, address)
        except HasherBusy as busy:
            raise _too_many(busy.retry_after, "The server is busy checking passwords") from None

    async def _hash(self, password: str, address: str) -> str:
        try:
            return await self._hasher.hash(password, address)
        except HasherBusy as busy:
            raise _too_many(busy.retry_after, "The server is busy checking passwords") from None

    async def resume(self, peer: Peer, request: protocol.Resume) -> protocol.Reply:
        _require_anonymous(peer)
        # No reservation here: a resume costs one indexed read, not an argon2
        # verification, and a 256-bit token cannot be guessed by concurrency.
        # A burst of honest resumes (everyone reconnecting after a restart)
        # must not be refused for being simultaneous.
        wait = await self._login_by_address.retry_after(peer.address)
        if wait is not None:
            raise _too_many(wait, "Too many attempts")
        hashed = token_hash(request.token)
        found = await self._store.user_by_token(hashed, now_ms())
        if found is None:
            await self._login_by_address.record(peer.address)
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
            admin=await self._admin_role(user),
        )

    async def logout(self, peer: Peer, request: protocol.Logout) -> protocol.Reply:
        """End the session everywhere: every connection using this token is signed out."""
        if peer.user is not None:
            hashed = peer.token_hash
            others = [p for p in self._peers.using_token(hashed) if p is not peer]
            for signed_in in (peer, *others):
                self._sign_out(signed_in)
            for other in others:
                other.close_logged_out()
            if hashed:
                await self._store.revoke_token(hashed)
                if self.cluster is not None:
                    self.cluster.end_session(hashed)
        return protocol.Ok(id=request.id)

    def _session_ended_elsewhere(self, token_hash: str) -> None:
        """A logout on another node of the cluster ends this token's connections here too."""
        for peer in self._peers.using_token(token_hash):
            self._sign_out(peer)
            peer.close_logged_out()

    def _sign_out(self, peer: Peer) -> None:
        """Leave every room at once (no grace) and forget who the connection was."""
        for room in list(peer.rooms.values()):
            self._leave(peer, room)
        peer.user, peer.token_hash = None, None

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
            admin=await self._admin_role(user),
        )

    async def _admin_role(self, user: UserRecord) -> bool:
        """The ``admin`` hint of ``welcome`` (the role itself is checked at each admin request)."""
        return self.is_admin is not None and await self.is_admin(user.id)

    @staticmethod
    def _authenticate(peer: Peer, user: UserRecord, hashed: str) -> None:
        peer.user, peer.token_hash = user, hashed

    # ------------------------------------------------------------------ rooms

    async def create_room(self, peer: Peer, request: protocol.CreateRoom) -> protocol.Reply | None:
        """Create a public room, or a private one in the creator's namespace (``~you/name``)."""
        name = protocol.check_room_name(request.room)
        if protocol.direct_room_users(name) is not None:
            raise ProtocolError(
                ErrorCode.INVALID_ROOM_NAME, "Open a direct-message room with direct."
            )
        creator = protocol.private_room_creator(name)
        if creator is not None and protocol.username_key(creator) != peer.user_key:
            raise ProtocolError(
                ErrorCode.INVALID_ROOM_NAME,
                f"Private rooms you create are named ~{peer.username}/name.",
            )
        if creator is not None or request.private:
            public = name.split("/", 1)[1] if creator is not None else name
            name = protocol.private_room_name(peer.username, public)
        return await self.create_named(peer, name, request.id)

    async def create_named(
        self, peer: Peer, name: str, request_id: protocol.RequestId | None
    ) -> protocol.Reply | None:
        """Store the room first; only then does it exist for anyone (a failure leaves no trace).

        While the row is being written the name is reserved: another creation
        gets ``room_exists`` and a join ``no_such_room``, as if it did not
        exist yet, which it does not.
        """
        key = protocol.room_key(name)
        exists = ProtocolError(ErrorCode.ROOM_EXISTS, f"A room called {name!r} already exists.")
        if self.rooms.get(key) is not None or key in self._creating:
            raise exists
        _raise_if_limited(await self._room_rate.take(peer.user_key))
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
        extras = None
        try:
            members = await self._cluster_enter(peer, room)
            if self.conversation is not None:
                await self.conversation.created(peer, room)
                extras = await self.conversation.entered(peer, room)
        except BaseException:
            self._leave(peer, room)
            raise
        self._reply_joined(
            peer,
            room,
            request_id,
            [],
            more=False,
            last_id=0,
            live=True,
            members=members,
            extras=extras,
        )
        return None

    async def join_room(self, peer: Peer, request: protocol.JoinRoom) -> protocol.Reply | None:
        name = protocol.check_room_name(request.room)
        room = self.rooms.get(protocol.room_key(name)) or await self._cluster_room(name)
        was_member = room is not None and room.key in peer.rooms
        if (
            protocol.is_private_room(name)
            and not was_member
            and self.conversation is not None
            and not await self.conversation.may_enter(peer, room)
        ):
            raise _no_such_room(name)  # the very answer a missing room gets
        if room is None or room.deleted:
            raise _no_such_room(name)
        if not was_member:
            _raise_if_limited(await self._room_rate.take(peer.user_key))
            if self.conversation is not None:
                await self.conversation.admit(peer, room)
            if room.deleted:  # deleted while the limits or the ban list were read
                raise _no_such_room(name)
        self._enter(peer, room)
        assert peer.user is not None
        extras = None
        try:
            members = await self._cluster_enter(peer, room)
            if self.conversation is not None:
                extras = await self.conversation.entered(peer, room)
            if request.after is not None:
                page = await self.life.catch_up(room, request.after, peer.user.id)
                self._still_joining(peer, room)
                # Only a catch-up page with more to come keeps the connection silent.
                self._reply_joined(
                    peer, room, request.id, page.messages, more=page.more,
                    last_id=page.cursor, live=not page.more, members=members,
                    changes=page.changes or None, cursor=page.cursor, extras=extras,
                )  # fmt: skip
                return None
            records, more = await self._store.latest_messages(room.id, protocol.JOIN_LATEST)
            shown = await self.life.present(room, records, peer.user.id)
        except (StoreError, BusUnavailable, RoomGone):
            if not was_member:
                self._leave(peer, room)
            raise
        self._still_joining(peer, room)
        messages, trimmed = protocol.fit_to_budget(shown, keep_newest=True)
        # A latest page keeps the newest message: the snapshot covers up to it.
        # Its ``more`` only says that older history exists: the connection is live.
        last_id = messages[-1].id if messages else 0
        self._reply_joined(
            peer,
            room,
            request.id,
            messages,
            more=more or trimmed,
            last_id=last_id,
            live=True,
            members=members,
            extras=extras,
        )
        return None

    async def leave_room(self, peer: Peer, request: protocol.LeaveRoom) -> protocol.Reply:
        room = self._joined_room(peer, request.room)
        self._leave(peer, room)
        if self.cluster is not None:
            await self.cluster.settled(room, peer)
        if self.conversation is not None:
            await self.conversation.left(peer, room)
        return protocol.Ok(id=request.id)

    def _still_joining(self, peer: Peer, room: Room) -> None:
        """Refuse to answer ``joined`` if a kick or ban took the connection out meanwhile.

        The kick was told (``kicked``); a ``joined`` after it would leave the
        client believing it is in a room the server took it out of. On a
        cluster, the kick's leave may have been recorded before this join's
        presence row: leave again (after the join, per user and room), so no
        ghost row keeps the room alive or the user listed.
        """
        if peer.rooms.get(room.key) is room:
            return
        if self.cluster is not None:
            if peer.user_key not in room.members:
                self.cluster.member_gone(room, peer.username, peer.user_key)
            self.cluster.forget_connection(room, peer)
        raise ProtocolError(
            ErrorCode.NOT_IN_ROOM, f"You were removed from {room.name!r} as you joined it."
        )

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
        changes: list[protocol.Message] | None = None,
        cursor: int | None = None,
        extras: Any = None,
    ) -> None:
        """Send ``joined`` first, then let the room's buffered events follow it."""
        joined = protocol.Joined(
            id=request_id,
            room=room.name,
            members=room.member_names() if members is None else members,
            messages=messages,
            more=more,
            changes=changes,
            cursor=cursor,
        )
        if extras is not None:
            joined.owner, joined.topic, joined.read_up_to = (
                extras.owner,
                extras.topic,
                extras.read_up_to,
            )
        peer.send(protocol.encode(joined))
        self.rooms.go_live(room, peer, last_id, live=live)
        if self.cluster is not None:
            self.cluster.went_live(room, peer)

    def joined_room(self, peer: Peer, name: str) -> Room:
        """The room called ``name`` that this connection joined, or ``not_in_room``."""
        return self._joined_room(peer, name)

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
        if self.conversation is not None:
            self.conversation.room_gone(room)
        if self.cluster is not None:
            self.cluster.room_unused(room)
            return
        log.info("room %r is empty; deleting it and its messages", room.name)
        metrics.ROOMS_DELETED_BY_CLEANUP.inc()
        task = asyncio.create_task(self._delete_room(room), name=f"delete-room-{room.id}")
        self._deleting[room.key] = task
        task.add_done_callback(lambda done: self._forget_deletion(room.key, done))

    async def _delete_room(self, room: Room) -> None:
        """Delete the row, retrying while the database is away (until the server stops).

        A room left stored would block its name; one still stored at the next
        start is restored for one grace period and deleted then.
        """
        delay = DELETE_RETRY_FIRST
        while True:
            try:
                await self._store.delete_room(room.id)
                return
            except UnavailableError:
                if await _stopped_within(self._stopping, delay):
                    return
                delay = min(delay * 2, DELETE_RETRY_MAX)
            except StoreError as exc:
                log.error("deleting the empty room %r failed: %s", room.name, exc)
                return

    def _forget_deletion(self, key: str, task: asyncio.Task[None]) -> None:
        if self._deleting.get(key) is task:
            del self._deleting[key]

    async def _deleted(self, key: str) -> None:
        """Wait until a deletion of the room called ``key`` (if any) is written."""
        task = self._deleting.get(key)
        if task is None:
            return
        try:
            async with asyncio.timeout(DELETE_WAIT):
                await asyncio.shield(task)
        except TimeoutError:
            raise UnavailableError("an earlier room of that name is still being deleted") from None

    async def finish_deletions(self) -> None:
        """Wait for every room deletion in flight (before the store closes)."""
        while self._deleting:
            await asyncio.gather(*self._deleting.values())

    # --------------------------------------------------------------- messages

    async def send(self, peer: Peer, request: protocol.Send) -> protocol.Reply:
        room = self._joined_room(peer, request.room)
        text = protocol.check_text(request.text)
        reply = None
        if request.reply_to is not None:
            reply = await self.life.reply_target(room, request.reply_to)
        if request.nonce is None:
            message = await self._store_message(peer, room, text, None, reply)
        else:
            message = await self._send_once(peer, room, text, request.nonce, reply)
        if self.conversation is not None:
            await self.conversation.sent(peer, room, message)
        return protocol.Sent(id=request.id, room=room.name, message=message)

    async def _send_once(
        self, peer: Peer, room: Room, text: str, nonce: str, reply: protocol.ReplyRef | None
    ) -> protocol.Message:
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
            message = await self._store_or_find(peer, room, text, nonce, reply)
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
        self, peer: Peer, room: Room, text: str, nonce: str, reply: protocol.ReplyRef | None
    ) -> protocol.Message:
        assert peer.user is not None
        try:
            return await self._store_message(peer, room, text, nonce, reply)
        except DuplicateError:
            earlier = await self._store.message_by_nonce(room.id, peer.user.id, nonce)
            if earlier is None:
                raise
            return (await self.life.present(room, [earlier], peer.user.id))[0]

    async def _store_message(
        self,
        peer: Peer,
        room: Room,
        text: str,
        nonce: str | None,
        reply: protocol.ReplyRef | None = None,
    ) -> protocol.Message:
        """Store durably, announce to the room right after the commit, then answer.

        The store calls ``announce`` in commit order, which within a room is id
        order, so every member sees the room's messages in the order stored.
        """
        assert peer.user is not None
        self._take(self._send_bucket, peer)
        started = time.perf_counter()
        if self.cluster is not None:  # the same budget across every node
            _raise_if_limited(await self.cluster.send_wait(peer.user_key, self._send_bucket))

        def announce(record: MessageRecord) -> None:
            self.announce(room, record, _message_event(room, record, reply))

        record = await self._store.append_message(
            room.id, peer.user.id, peer.user.username, text, self._now(), nonce, announce,
            reply_to=None if reply is None else reply.id,
        )  # fmt: skip
        metrics.SEND_LATENCY.observe(time.perf_counter() - started)
        metrics.HOT.messages_stored += 1
        return to_wire(room, record, reply)

    async def history(self, peer: Peer, request: protocol.History) -> protocol.Reply:
        room = self._joined_room(peer, request.room)
        assert peer.user is not None
        records, more = await self._store.messages_before(room.id, request.before, request.limit)
        messages, trimmed = protocol.fit_to_budget(
            await self.life.present(room, records, peer.user.id), keep_newest=True
        )
        return protocol.HistoryPage(
            id=request.id, room=room.name, messages=messages, more=more or trimmed
        )

    async def _encode_rows(self, room: Room, records: Sequence[MessageRecord]) -> list[bytes]:
        """The events of stored rows read back to fill a gap (messages and changes)."""
        return await self.life.events_of(room, records)

    def announce(self, room: Room, record: MessageRecord, event: bytes) -> None:
        """Deliver a stored row's event in the room's order (this node, or the cluster's)."""
        if self.cluster is None:
            self.rooms.publish_message(room, record.id, event)
        else:
            self.cluster.stored(record, event)

    def now(self) -> int:
        """Wall-clock milliseconds that never go backwards (for change times)."""
        return self._now()

    async def take_send(self, peer: Peer) -> None:
        """Count a change against the sender's message rate, cluster-wide (``rate_limited``)."""
        _raise_if_limited(await self._change_rate.take(peer.user_key))

    def take(self, bucket: TokenBucket, peer: Peer) -> None:
        """Count a request against ``bucket`` (``rate_limited`` past it)."""
        self._take(bucket, peer)

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


def _message_event(
    room: Room, record: MessageRecord, reply: protocol.ReplyRef | None = None
) -> bytes:
    """The ``message`` event of a stored message, encoded once for every recipient."""
    return protocol.encode(protocol.MessageEvent(message=to_wire(room, record, reply)))


_COUNTED = frozenset(
    {ErrorCode.INVALID_CREDENTIALS, ErrorCode.INVALID_TOKEN, ErrorCode.USERNAME_TAKEN}
)


class _Attempt:
    """One reserved attempt; ``keep`` says whether it stays counted once it ends."""

    __slots__ = ("keep",)

    def __init__(self) -> None:
        self.keep = False


@contextlib.asynccontextmanager
async def _attempt(windows: list[tuple[Attempts, str]]) -> AsyncIterator[_Attempt]:
    """Reserve an attempt in every window (or refuse with ``too_many_attempts``), then settle.

    Reserving before the slow work is what bounds concurrent attempts: they
    count while in flight, not only after they failed. On a cluster the
    reservation is atomic in Redis, so N nodes together admit no more.
    """
    reserved: list[tuple[Attempts, Ticket]] = []
    waits: list[float] = []
    for window, key in windows:
        ticket = await window.reserve(key)
        if isinstance(ticket, Ticket):
            reserved.append((window, ticket))
        else:
            waits.append(ticket)
    if waits:
        for window, ticket in reserved:
            await window.settle(ticket, failed=False)
        raise _too_many(max(waits), "Too many attempts")
    attempt = _Attempt()
    try:
        yield attempt
    except BaseException as exc:
        # Only a wrong answer counts; a busy server or a database hiccup does not.
        attempt.keep &= isinstance(exc, ProtocolError) and exc.code in _COUNTED
        raise
    finally:
        for window, ticket in reserved:
            await window.settle(ticket, failed=attempt.keep)


def _too_many(wait: float, what: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.TOO_MANY_ATTEMPTS,
        f"{what}; try again in {max(1, round(wait))} seconds.",
        retry_after=round(wait, 3),
    )


def _no_match() -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_CREDENTIALS, "That username and password do not match.")


def _login_key(username: str) -> str | None:
    """The key to look a login up by, or None for a name no account can have."""
    try:
        return protocol.username_key(protocol.check_username(username))
    except ProtocolError:
        return None


def _no_such_room(name: str) -> ProtocolError:
    return ProtocolError(ErrorCode.NO_SUCH_ROOM, f"There is no room called {name!r}.")


def _name_taken(username: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.USERNAME_TAKEN, f"The username {username!r} is taken; pick another."
    )


def _require_anonymous(peer: Peer) -> None:
    if peer.user is not None:
        raise ProtocolError(
            ErrorCode.ALREADY_AUTHENTICATED, "You are already logged in; log out first."
        )


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True if the service is stopping (a flag, not a cancel)."""
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        return False
    return True

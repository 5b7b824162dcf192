"""Conversation requests and rules: read markers, mentions, typing, topic, owner, kick, ban.

Plugged into ``ChatService`` the way the admin requests are: ``handlers``
serve the new request types, and the service calls the hooks below at the
moments that matter (a join is admitted and remembered, a message is sent,
a user leaves, a connection drops, a room is deleted). Stored state goes
through ``ConversationStore``; typing lives only in memory.

Ownership: the creator owns a room. When the owner stops being present
(leaves, is removed, or their grace period after a disconnect ends) and
others remain, the earliest-joined present member becomes owner and
everyone is told (``owner`` event). Only the owner sets the topic, kicks,
bans and unbans.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import protocol
from clubroom_server.peer import Peer
from clubroom_server.rooms import Room, Rooms
from clubroom_server.service import ChatService, Handler, now_ms
from clubroom_server.store import StoreError, UnavailableError
from clubroom_server.store.conversation import ConversationStore
from clubroom_server.typing_state import TypingTracker
from protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)
RETRY_FIRST = 0.5  # seconds before storing a change again that the database could not take
RETRY_MAX = 8.0


@dataclass(frozen=True, slots=True)
class JoinedExtras:
    """The optional ``joined`` fields: who owns the room, its topic, the reader's marker."""

    owner: str | None
    topic: str
    read_up_to: int


class Conversation:
    """The conversation handlers, and the hooks ``ChatService`` calls."""

    def __init__(self, store: ConversationStore, service: ChatService) -> None:
        self._store = store
        self._service = service
        self._rooms: Rooms = service.rooms
        limits = service.cluster.limits if service.cluster is not None else None
        # On a cluster the relay pace is one per user and room across every node.
        self.typing = TypingTracker(
            self._relay_typing, gate=limits.claim_relay if limits is not None else None
        )
        self._writes: set[asyncio.Task[None]] = set()
        self._closing = False
        self._rooms.on_member_removed = self._member_removed
        if service.cluster is not None:
            service.cluster.on_user_event = self._heard_user_event
            service.cluster.on_members_left = self._hand_over_in_cluster

    @property
    def handlers(self) -> dict[type, Handler]:
        return {
            protocol.MarkRead: self.mark_read,
            protocol.MyRooms: self.my_rooms,
            protocol.Typing: self.typing_request,
            protocol.SetTopic: self.set_topic,
            protocol.Kick: self.kick,
            protocol.Ban: self.ban,
            protocol.Unban: self.unban,
            protocol.Invite: self.invite,
            protocol.Direct: self.direct,
        }

    async def start(self) -> None:
        """Give every restored room its stored owner and topic."""
        meta = {m.room_id: m for m in await self._store.room_meta()}
        for room in self._service.all_rooms():
            found = meta.get(room.id)
            if found is not None:
                room.owner_key, room.owner, room.topic = found.owner_key, found.owner, found.topic

    async def close(self) -> None:
        self._closing = True
        self.typing.close()
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._store.close()

    # ------------------------------------------------------------------ hooks

    async def admit(self, peer: Peer, room: Room) -> None:
        """Refuse a banned user before they become a member (``banned``)."""
        if peer.user_key == room.owner_key:
            return
        if await self._store.is_banned(room.id, peer.user_key):
            raise ProtocolError(
                ErrorCode.BANNED, f"The owner of {room.name!r} has banned you from it."
            )

    async def may_enter(self, peer: Peer, room: Room | None) -> bool:
        """May this user join the private room (invited, a member, or one of a DM's two)?

        A missing room costs the same query as an existing one, so how long
        the answer takes does not tell an outsider whether it exists.
        """
        if room is not None:
            users = protocol.direct_room_users(room.name)
            if users is not None:
                return peer.user_key in {protocol.username_key(user) for user in users}
            if peer.user_key in room.members:
                return True
        return await self._store.may_enter(room.id if room else -1, peer.user_key)

    async def created(self, peer: Peer, room: Room) -> None:
        """The creator owns the new room (in memory at once, then stored)."""
        room.owner_key, room.owner = peer.user_key, peer.username
        await self._store.set_owner(room.id, peer.user_key)

    async def entered(self, peer: Peer, room: Room) -> JoinedExtras:
        """Remember the membership (and its read marker) for the ``joined`` reply.

        One process knows every room's owner and topic: a room got them when
        it was restored (``start``) or created (``created``). On a cluster,
        another node may have made the room or changed its topic: read them.
        """
        assert peer.user is not None
        if self._service.cluster is not None:
            for meta in await self._store.room_meta(room.id):
                room.owner_key, room.owner, room.topic = meta.owner_key, meta.owner, meta.topic
        read_up_to = await self._store.remember(room.id, peer.user.id, now_ms())
        return JoinedExtras(room.owner or None, room.topic, read_up_to)

    async def left(self, peer: Peer, room: Room) -> None:
        """An explicit leave: once no connection of the user remains, not a member any more."""
        self.typing.end(room.id, peer.user_key)
        if peer.user_key not in room.members:
            # Awaited, so that the user's next my_rooms (maybe on another node) no
            # longer lists the room; with the database away, it follows when it can.
            key = peer.user_key
            try:
                await self._store.forget(room.id, key)
            except StoreError:
                self._in_background(lambda: self._store.forget(room.id, key), "membership end")

    def disconnected(self, peer: Peer) -> None:
        """A dropped connection ends its user's typing in each of its rooms."""
        for room in peer.rooms.values():
            self.typing.end(room.id, peer.user_key)

    async def sent(self, peer: Peer, room: Room, message: protocol.Message) -> None:
        """A sent message ends typing and records the mentions in it (never failing the send)."""
        assert peer.user is not None
        self.typing.end(room.id, peer.user_key)
        if "@" not in message.text:
            return
        keys = protocol.mentioned_keys(message.text)
        keys.discard(peer.user_key)
        try:
            mentioned = await self._store.record_mentions(room.id, message.id, peer.user.id, keys)
        except StoreError as exc:
            log.warning("mentions of message %d were not recorded: %s", message.id, exc)
            return
        event = protocol.encode(
            protocol.MentionEvent(room=room.name, message_id=message.id, author=peer.username)
        )
        for key in mentioned:
            self._to_user(key, room, event)

    def room_gone(self, room: Room) -> None:
        """The room left this process's registry: its typing states go with it."""
        self.typing.forget_room(room.id)

    def _member_removed(self, room: Room, user_key: str) -> None:
        """A user is no longer present: their typing ends; an owner hands over."""
        self.typing.end(room.id, user_key)
        if self._service.cluster is not None:
            return  # the database decides, once the user left everywhere (below)
        if user_key != room.owner_key or not room.members:
            return
        heir_key, heir = next(iter(room.members.items()))
        room.owner_key, room.owner = heir_key, heir.username
        log.info("room %r is now owned by %s", room.name, heir.username)
        self._rooms.announce(room, protocol.OwnerChanged(room=room.name, owner=heir.username))
        self._in_background(lambda: self._store.set_owner(room.id, heir_key), "room owner")

    def _hand_over_in_cluster(self, room_id: int, room_name: str, usernames: list[str]) -> None:
        """Cluster: users left the room everywhere; if the owner was one, the database
        names the heir and every node is told (its rooms' owner, and the members)."""
        keys = [protocol.username_key(name) for name in usernames]

        async def hand_over() -> None:
            heir = await self._store.hand_over(room_id, keys)
            if heir is None:
                return
            log.info("room %r is now owned by %s", room_name, heir[1])
            event = protocol.encode(protocol.OwnerChanged(room=room_name, owner=heir[1]))
            self._owner_changed(protocol.room_key(room_name), heir[0], event)
            assert self._service.cluster is not None
            self._service.cluster.to_user("owner", heir[0], protocol.room_key(room_name), event)

        self._in_background(hand_over, "room owner")

    def _owner_changed(self, room_key: str, owner_key: str, event: bytes) -> None:
        """This node's copy of a room learns its new owner, and its members are told."""
        room = self._rooms.get(room_key)
        if room is None or room.deleted:
            return
        owner = json.loads(event).get("owner", "")
        room.owner_key, room.owner = owner_key, str(owner)
        self._rooms.forward(room, event)

    def _in_background(self, write: Callable[[], Awaitable[object]], what: str) -> None:
        """Store a change the user was already told about, retrying while the database is away.

        A leave or an owner hand-over happens in memory at once (presence
        never waits for the database); the row follows as soon as it can.
        """

        async def run() -> None:
            delay = RETRY_FIRST
            while True:
                try:
                    await write()
                    return
                except UnavailableError:
                    if self._closing or delay > RETRY_MAX:
                        log.warning("could not store the %s: the database is away", what)
                        return
                    await asyncio.sleep(delay)
                    delay *= 2
                except StoreError as exc:
                    log.warning("could not store the %s: %s", what, exc)
                    return

        task = asyncio.create_task(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    # --------------------------------------------------------------- requests

    async def mark_read(self, peer: Peer, request: protocol.MarkRead) -> protocol.Reply:
        """Move the read marker forward; the user's other connections in the room are told."""
        assert peer.user is not None
        room = self._service.joined_room(peer, request.room)
        up_to = await self._store.mark_read(room.id, peer.user.id, request.up_to)
        if up_to is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"Join the room {room.name!r} first.")
        event = protocol.encode(protocol.ReadMarker(room=room.name, up_to=up_to))
        self._to_user(peer.user_key, room, event, skip=peer)
        return protocol.ReadMarker(id=request.id, room=room.name, up_to=up_to)

    async def my_rooms(self, peer: Peer, request: protocol.MyRooms) -> protocol.Reply:
        assert peer.user is not None
        rooms = [
            protocol.RoomState(
                room=m.room,
                unread=m.unread,
                mentions=m.mentions,
                last_id=m.last_id,
                read_up_to=m.read_up_to,
            )
            for m in await self._store.memberships(peer.user.id)
        ]
        invitations = [
            protocol.Invitation(room=name, by=by)
            for name, by in await self._store.invitations(peer.user_key)
        ]
        return protocol.MyRoomList(id=request.id, rooms=rooms, invitations=invitations)

    async def typing_request(self, peer: Peer, request: protocol.Typing) -> protocol.Reply:
        room = self._service.joined_room(peer, request.room)
        self.typing.update(room.id, peer.user_key, peer.username, request.state)
        return protocol.Ok(id=request.id)

    def _relay_typing(self, room_id: int, username: str, state: protocol.TypingState) -> None:
        room = self._rooms.by_id(room_id)  # the registry: no table of our own to outlive rooms
        if room is None or room.deleted:
            return
        event = protocol.TypingEvent(room=room.name, username=username, state=state)
        if self._service.cluster is not None:  # every node's, but not the typist's own
            self._service.cluster.broadcast(room, protocol.encode(event), except_user=username)
            return
        others = [c for c in room.live if c.username != username]
        if others:
            self._rooms.fanout(others, protocol.encode(event))

    async def set_topic(self, peer: Peer, request: protocol.SetTopic) -> protocol.Reply:
        room = self._owned_room(peer, request.room)
        topic = protocol.check_topic(request.topic)
        await self._store.set_topic(room.id, topic)
        room.topic = topic
        event = protocol.TopicChanged(room=room.name, topic=topic, by=peer.username)
        if self._service.cluster is not None:
            self._service.cluster.broadcast(room, protocol.encode(event))
        else:
            self._rooms.announce(room, event)
        return protocol.Ok(id=request.id)

    async def kick(self, peer: Peer, request: protocol.Kick) -> protocol.Reply:
        room = self._owned_room(peer, request.room)
        key, name = self._other_user(peer, request.username)
        if not await self._is_member(room, key):
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"{name} is not a member of {room.name!r}.")
        self._remove(room, key, peer.username, protocol.check_reason(request.reason), banned=False)
        await self._store.forget(room.id, key)
        log.info("%s kicked %s from room %r", peer.username, name, room.name)
        return protocol.Ok(id=request.id)

    async def ban(self, peer: Peer, request: protocol.Ban) -> protocol.Reply:
        room = self._owned_room(peer, request.room)
        key, _ = self._other_user(peer, request.username)
        username = await self._store.username(key)
        if username is None:
            raise ProtocolError(
                ErrorCode.NO_SUCH_USER, f"There is no user called {request.username.strip()!r}."
            )
        await self._store.ban(room.id, key, username)
        if not room.deleted:
            self._remove(
                room, key, peer.username, protocol.check_reason(request.reason), banned=True
            )
        await self._store.forget(room.id, key)
        log.info("%s banned %s from room %r", peer.username, username, room.name)
        return protocol.Ok(id=request.id)

    async def unban(self, peer: Peer, request: protocol.Unban) -> protocol.Reply:
        room = self._owned_room(peer, request.room)
        key, name = self._other_user(peer, request.username)
        if not await self._store.unban(room.id, key):
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"{name} is not banned from {room.name!r}.")
        return protocol.Ok(id=request.id)

    async def invite(self, peer: Peer, request: protocol.Invite) -> protocol.Reply:
        """The owner of a private room lets a user in; the user is told at once."""
        room = self._owned_room(peer, request.room)
        if protocol.private_room_creator(room.name) is None:
            what = "a direct message" if protocol.is_private_room(room.name) else "public"
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"{room.name!r} is {what}: invitations are for private rooms.",
            )
        key, _ = self._other_user(peer, request.username)
        username = await self._store.username(key)
        if username is None:
            raise ProtocolError(
                ErrorCode.NO_SUCH_USER, f"There is no user called {request.username.strip()!r}."
            )
        await self._store.invite(room.id, key, peer.username)
        self._tell_invited(room, key, peer.username)
        return protocol.Ok(id=request.id)

    async def direct(self, peer: Peer, request: protocol.Direct) -> protocol.Reply | None:
        """Join the two-person room with a user, creating it (and inviting them) if need be."""
        key, _ = self._other_user(peer, request.username)
        username = await self._store.username(key)
        if username is None:
            raise ProtocolError(
                ErrorCode.NO_SUCH_USER, f"There is no user called {request.username.strip()!r}."
            )
        name = protocol.direct_room_name(peer.username, username)
        existing = self._rooms.get(protocol.room_key(name))
        if existing is None and self._service.cluster is not None:
            existing = await self._service.cluster.find_room(protocol.room_key(name))
        if existing is not None and not existing.deleted:
            return await self._service.join_room(peer, protocol.JoinRoom(id=request.id, room=name))
        reply = await self._service.create_named(peer, name, request.id)
        room = self._rooms.get(protocol.room_key(name))
        if room is not None:
            await self._store.invite(room.id, key, peer.username)
            self._tell_invited(room, key, peer.username)
        return reply

    def _tell_invited(self, room: Room, user_key: str, by: str) -> None:
        event = protocol.encode(protocol.Invited(room=room.name, by=by))
        self._to_user(user_key, None, event)

    # ------------------------------------------------------- per-user events

    def _to_user(
        self, user_key: str, room: Room | None, data: bytes, skip: Peer | None = None
    ) -> None:
        """An event for one user's connections (in ``room`` if given), on every node."""
        room_key = room.key if room is not None else ""
        self._send_here(user_key, room_key, data, skip)
        if self._service.cluster is not None:
            self._service.cluster.to_user("send", user_key, room_key, data)

    def _send_here(self, user_key: str, room_key: str, data: bytes, skip: Peer | None) -> None:
        """This node's connections of the user: in the room (the member's, no scan), or all."""
        if room_key:
            room = self._rooms.get(room_key)
            member = room.members.get(user_key) if room is not None else None
            connections = list(member.connections) if member is not None else []
        else:
            connections = self._service.connections_of(user_key)
        for connection in connections:
            if connection is not skip:
                connection.send(data)  # type: ignore[attr-defined]

    def _heard_user_event(self, action: str, user_key: str, room_key: str, data: bytes) -> None:
        """Another node's per-user event: send it, or take the user out of the room here."""
        if action == "send":
            self._send_here(user_key, room_key, data, None)
        elif action == "owner":
            self._owner_changed(room_key, user_key, data)
        elif action == "remove":
            room = self._rooms.get(room_key)
            if room is not None and not room.deleted:
                self._remove_here(room, user_key, data)

    def _remove(self, room: Room, key: str, by: str, reason: str, *, banned: bool) -> None:
        """Take a user out of the room on every connection at once, telling them why.

        Each connection goes through the registry's ordinary detach, so the
        last one out announces ``member_left`` and an empty room is deleted
        exactly as after a leave.
        """
        event = protocol.encode(
            protocol.Kicked(room=room.name, by=by, reason=reason, banned=banned)
        )
        self._remove_here(room, key, event)
        if self._service.cluster is not None:
            self._service.cluster.to_user("remove", key, room.key, event)

    def _remove_here(self, room: Room, key: str, event: bytes) -> None:
        """This node's part of a kick: detach the user's connections here, told by ``event``."""
        member = room.members.get(key)
        if member is None:
            return
        for connection in list(member.connections):
            connection.rooms.pop(room.key, None)  # type: ignore[attr-defined]
            connection.send(event)  # type: ignore[attr-defined]
            self._rooms.detach(room, connection, grace=False)
        if key in room.members:  # in grace after a disconnect: no connection to detach
            self._rooms.remove_member(room, key)

    async def _is_member(self, room: Room, key: str) -> bool:
        """Present here, remembered as a member, or (on a cluster) present on another node —
        a member still joining there is present before they are remembered."""
        if key in room.members or await self._store.is_member(room.id, key):
            return True
        cluster = self._service.cluster
        return cluster is not None and await cluster.members.is_present(room.id, key)

    def _owned_room(self, peer: Peer, name: str) -> Room:
        room = self._service.joined_room(peer, name)
        if room.owner_key != peer.user_key:
            owner = f" ({room.owner} owns it)" if room.owner else ""
            raise ProtocolError(
                ErrorCode.NOT_OWNER, f"Only the owner of {room.name!r} may do that{owner}."
            )
        return room

    @staticmethod
    def _other_user(peer: Peer, username: str) -> tuple[str, str]:
        """The key of a username that is not the requester's own (``no_such_user`` if invalid)."""
        try:
            name = protocol.check_username(username.strip())
        except ProtocolError:
            raise ProtocolError(
                ErrorCode.NO_SUCH_USER, f"There is no user called {username.strip()!r}."
            ) from None
        key = protocol.username_key(name)
        if key == peer.user_key:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "You cannot do that to yourself.")
        return key, name

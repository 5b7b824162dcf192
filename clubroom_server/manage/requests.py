"""The admin requests: list rooms and users, delete a room, disable or enable a user.

Only accounts with the admin role (``clubroom-server users grant-admin``)
may use them; anyone else gets ``forbidden``. The role is read from the
database at every request, so revoking it takes effect at once. Each
action goes through the same store calls as the command line, so it is
recorded in ``admin_events`` and reaches every node; this node applies it
before answering.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import protocol
from clubroom_server.manage.live import AdminFollower
from clubroom_server.peer import Peer
from clubroom_server.rooms import Rooms
from clubroom_server.service import Handler
from clubroom_server.store.admin import AdminStore, UserSummary
from protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)


class AdminRequests:
    """Handlers for the admin request types, plugged into ``ChatService``."""

    def __init__(
        self,
        store: AdminStore,
        follower: AdminFollower,
        rooms: Rooms,
        count_members: Callable[[int], Awaitable[int]] | None = None,
    ) -> None:
        self._store = store
        self._follower = follower
        self._rooms = rooms
        # In a cluster the members of a room live in the database, not here.
        self._count_members = count_members

    @property
    def handlers(self) -> dict[type, Handler]:
        return {
            protocol.AdminRooms: self.rooms,
            protocol.AdminDeleteRoom: self.delete_room,
            protocol.AdminDisableUser: self.disable_user,
            protocol.AdminEnableUser: self.enable_user,
            protocol.AdminUsers: self.users,
        }

    async def is_admin(self, user_id: int) -> bool:
        """For ``welcome``'s hint; the requests below still check the role themselves."""
        return await self._store.is_admin(user_id)

    async def rooms(self, peer: Peer, request: protocol.AdminRooms) -> protocol.Reply:
        await self._require_admin(peer)
        listed = []
        for room in await self._store.rooms():
            members = await self._members(room.id, room.name)
            listed.append(protocol.AdminRoomInfo(room.name, members, room.messages))
        return protocol.AdminRoomList(id=request.id, rooms=listed)

    async def _members(self, room_id: int, name: str) -> int:
        if self._count_members is not None:
            return await self._count_members(room_id)
        live = self._rooms.get(protocol.room_key(name))
        return len(live.members) if live is not None and live.id == room_id else 0

    async def delete_room(self, peer: Peer, request: protocol.AdminDeleteRoom) -> protocol.Reply:
        await self._require_admin(peer)
        name = protocol.check_room_name(request.room)
        room = await self._store.room(protocol.room_key(name))
        if room is None:
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"There is no room called {name!r}.")
        await self._store.delete_room(room)
        log.info("admin %s deleted room %r", peer.username, room.name)
        await self._follower.poll()  # this node now; the others within half a second
        return protocol.Ok(id=request.id)

    async def disable_user(self, peer: Peer, request: protocol.AdminDisableUser) -> protocol.Reply:
        await self._require_admin(peer)
        user = await self._existing_user(request.username)
        await self._store.disable_user(user.id)
        log.info("admin %s disabled user %s", peer.username, user.username)
        await self._follower.poll()
        return protocol.Ok(id=request.id)

    async def enable_user(self, peer: Peer, request: protocol.AdminEnableUser) -> protocol.Reply:
        """Unlock a disabled account; enabling an active one changes nothing and is ok too."""
        await self._require_admin(peer)
        user = await self._existing_user(request.username)
        if await self._store.enable_user(user.id):
            log.info("admin %s enabled user %s", peer.username, user.username)
        return protocol.Ok(id=request.id)

    async def users(self, peer: Peer, request: protocol.AdminUsers) -> protocol.Reply:
        """Accounts whose name contains ``query`` (case-insensitive), deleted ones left out."""
        await self._require_admin(peer)
        wanted = request.query.strip().casefold()
        found = [
            protocol.AdminUserInfo(
                u.username, "disabled" if u.status == "disabled" else "active", u.admin, u.sessions
            )
            for u in await self._store.users()
            if u.status != "deleted" and wanted in u.username.casefold()
        ]
        return protocol.AdminUserList(
            id=request.id,
            users=found[: protocol.ADMIN_USERS_MAX],
            more=len(found) > protocol.ADMIN_USERS_MAX,
        )

    async def _existing_user(self, username: str) -> UserSummary:
        user = await self._store.user(protocol.username_key(username))
        if user is None or user.status == "deleted":
            raise ProtocolError(
                ErrorCode.NO_SUCH_USER, f"There is no user called {username.strip()!r}."
            )
        return user

    async def _require_admin(self, peer: Peer) -> None:
        if peer.user is None or not await self._store.is_admin(peer.user.id):
            raise ProtocolError(ErrorCode.FORBIDDEN, "Only an administrator may do that.")

"""Every line of SQL behind conversations: memberships, read markers, mentions, owner, bans.

Kept apart from the message store (``interface.Store``) because none of it
is on the hot path of a send but for mentions, and none of it needs the
group commit: each call is one short statement or transaction, run through
the same two-backend adapter as the admin commands (``admin.Database``).

What is stored here, and why it must be:

* ``memberships``: a user stays a member of a room, with a read marker,
  until they leave it (or are kicked); a dropped connection or a restart
  does not end it, so a client that starts fresh can show the right
  unread and mention counts (``my_rooms``). Rows die with the room.
* ``mentions``: one row per (mentioned member, message), so unread mention
  counts are exact rather than guessed from text.
* ``rooms.owner_id`` / ``rooms.topic``, and ``bans`` (which die with the room).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clubroom_server.store.admin import Database, PostgresDatabase, SQLiteDatabase
from clubroom_server.store.factory import is_postgres_url, sqlite_path
from clubroom_server.store.interface import StartupError


@dataclass(frozen=True, slots=True)
class RoomMeta:
    """What a restored room needs besides its name: its owner and topic."""

    room_id: int
    owner_key: str
    owner: str
    topic: str


@dataclass(frozen=True, slots=True)
class Membership:
    """One of a user's rooms with the counts behind its dashboard badges."""

    room: str
    unread: int
    mentions: int
    last_id: int
    read_up_to: int


class ConversationStore:
    """Memberships, read markers, mentions, owners, topics and bans, on either backend."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def close(self) -> None:
        await self._db.close()

    # ------------------------------------------------------------ memberships

    async def remember(self, room_id: int, user_id: int, now_ms: int) -> int:
        """Make the user a member (a newcomer has read everything so far); their marker."""
        await self._db.execute(
            "INSERT INTO memberships (room_id, user_id, joined_ms, read_up_to) "
            "VALUES (?, ?, ?, (SELECT COALESCE(MAX(id), 0) FROM messages WHERE room_id = ?)) "
            "ON CONFLICT (room_id, user_id) DO NOTHING",
            (room_id, user_id, now_ms, room_id),
        )
        await self._db.execute(
            "DELETE FROM invitations WHERE room_id = ? "
            "AND user_key = (SELECT key FROM users WHERE id = ?)",
            (room_id, user_id),
        )
        rows = await self._db.fetch(
            "SELECT read_up_to FROM memberships WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return int(rows[0][0]) if rows else 0

    async def forget(self, room_id: int, user_key: str) -> bool:
        """The user left or was removed: no longer a member (True if they were)."""
        changed = await self._db.execute(
            "DELETE FROM memberships WHERE room_id = ? "
            "AND user_id = (SELECT id FROM users WHERE key = ?)",
            (room_id, user_key),
        )
        await self._db.execute(
            "DELETE FROM mentions WHERE room_id = ? "
            "AND user_id = (SELECT id FROM users WHERE key = ?)",
            (room_id, user_key),
        )
        return changed > 0

    async def is_member(self, room_id: int, user_key: str) -> bool:
        rows = await self._db.fetch(
            "SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id "
            "WHERE m.room_id = ? AND u.key = ?",
            (room_id, user_key),
        )
        return bool(rows)

    async def mark_read(self, room_id: int, user_id: int, up_to: int) -> int | None:
        """Move the marker forward to ``up_to`` (never back, never past the last message).

        Returns the marker as it now stands, or None if the user is not a member.
        """
        await self._db.execute(
            "UPDATE memberships SET read_up_to = ? WHERE room_id = ? AND user_id = ? "
            "AND read_up_to < ? AND ? <= (SELECT COALESCE(MAX(id), 0) FROM messages "
            "WHERE room_id = ?)",
            (up_to, room_id, user_id, up_to, up_to, room_id),
        )
        rows = await self._db.fetch(
            "SELECT read_up_to FROM memberships WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return int(rows[0][0]) if rows else None

    async def memberships(self, user_id: int) -> list[Membership]:
        """The user's rooms with unread (others' messages) and unread mention counts."""
        rows = await self._db.fetch(
            "SELECT r.name, "
            "(SELECT COUNT(*) FROM messages x WHERE x.room_id = m.room_id "
            " AND x.id > m.read_up_to AND x.author_id <> m.user_id), "
            "(SELECT COUNT(*) FROM mentions n WHERE n.room_id = m.room_id "
            " AND n.user_id = m.user_id AND n.message_id > m.read_up_to), "
            "(SELECT COALESCE(MAX(x.id), 0) FROM messages x WHERE x.room_id = m.room_id), "
            "m.read_up_to FROM memberships m JOIN rooms r ON r.id = m.room_id "
            "WHERE m.user_id = ? ORDER BY r.name",
            (user_id,),
        )
        return [Membership(str(row[0]), *(int(value) for value in row[1:])) for row in rows]

    # --------------------------------------------------------------- mentions

    async def record_mentions(
        self, room_id: int, message_id: int, author_id: int, keys: set[str]
    ) -> list[str]:
        """Record a mention for each member named by ``keys``; their keys (others do nothing).

        Most ``@word``s name nobody in the room (an e-mail address, a time
        like ``@10``): the members are looked up first with a hot read, and
        only a real mention takes the write lock.
        """
        if not keys:
            return []
        marks = ", ".join("?" for _ in keys)
        members = (
            "SELECT u.id, u.key FROM memberships m JOIN users u ON u.id = m.user_id "
            f"WHERE m.room_id = ? AND m.user_id <> ? AND u.key IN ({marks})"
        )
        params = (room_id, author_id, *sorted(keys))
        if not await self._db.fetch_hot(members, params):
            return []
        async with self._db.transaction() as tx:
            rows = await tx.fetch(members, params)  # again: a leave may have come in between
            for user_id, _ in rows:
                await tx.execute(
                    "INSERT INTO mentions (message_id, user_id, room_id) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (message_id, user_id, room_id),
                )
        return [key for _, key in rows]

    # ---------------------------------------------------------- owner, topic

    async def room_meta(self, room_id: int | None = None) -> list[RoomMeta]:
        """Owner and topic of every room (or of one: a room another node made)."""
        where, params = ("WHERE r.id = ?", (room_id,)) if room_id is not None else ("", ())
        rows = await self._db.fetch(
            "SELECT r.id, COALESCE(u.key, ''), COALESCE(u.username, ''), r.topic "
            f"FROM rooms r LEFT JOIN users u ON u.id = r.owner_id {where}",
            params,
        )
        return [RoomMeta(int(a), b, c, d) for a, b, c, d in rows]

    async def set_owner(self, room_id: int, user_key: str) -> None:
        await self._db.execute(
            "UPDATE rooms SET owner_id = (SELECT id FROM users WHERE key = ?) WHERE id = ?",
            (user_key, room_id),
        )

    async def hand_over(self, room_id: int, leaver_keys: list[str]) -> tuple[str, str] | None:
        """Cluster: if the owner is among the leavers, the earliest-joined member still
        present anywhere (``presence``) owns the room; (key, username) of the heir, or None.

        One conditional UPDATE, so the node that recorded the owner's leave
        (exactly one does) decides, and a repeat finds nothing to change.
        """
        if not leaver_keys:
            return None
        marks = ", ".join("?" for _ in leaver_keys)
        rows = await self._db.fetch(
            "UPDATE rooms SET owner_id = ("
            "  SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id"
            "  WHERE m.room_id = rooms.id"
            "  AND u.key IN (SELECT p.user_key FROM presence p WHERE p.room_id = rooms.id)"
            f"  AND u.key NOT IN ({marks}) ORDER BY m.joined_ms, m.user_id LIMIT 1"
            f") WHERE id = ? AND owner_id IN (SELECT id FROM users WHERE key IN ({marks})) "
            "RETURNING (SELECT u.key FROM users u WHERE u.id = rooms.owner_id), "
            "(SELECT u.username FROM users u WHERE u.id = rooms.owner_id)",
            (*leaver_keys, room_id, *leaver_keys),
        )
        if not rows or rows[0][0] is None:
            return None
        return str(rows[0][0]), str(rows[0][1])

    async def set_topic(self, room_id: int, topic: str) -> None:
        await self._db.execute("UPDATE rooms SET topic = ? WHERE id = ?", (topic, room_id))

    # ------------------------------------------------------- private rooms

    async def invite(self, room_id: int, user_key: str, by: str) -> None:
        await self._db.execute(
            "INSERT INTO invitations (room_id, user_key, by_name) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id, user_key) DO NOTHING",
            (room_id, user_key, by),
        )

    async def may_enter(self, room_id: int, user_key: str) -> bool:
        """True if the user was invited into the room or is a member of it."""
        rows = await self._db.fetch(
            "SELECT 1 FROM invitations WHERE room_id = ? AND user_key = ? "
            "UNION ALL SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id "
            "WHERE m.room_id = ? AND u.key = ?",
            (room_id, user_key, room_id, user_key),
        )
        return bool(rows)

    async def invitations(self, user_key: str) -> list[tuple[str, str]]:
        """(room name, inviter) for each invitation the user has not taken up yet."""
        rows = await self._db.fetch(
            "SELECT r.name, i.by_name FROM invitations i JOIN rooms r ON r.id = i.room_id "
            "WHERE i.user_key = ? ORDER BY r.name",
            (user_key,),
        )
        return [(str(name), str(by)) for name, by in rows]

    # ------------------------------------------------------------------ bans

    async def ban(self, room_id: int, user_key: str, username: str) -> None:
        await self._db.execute(
            "INSERT INTO bans (room_id, user_key, username) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id, user_key) DO NOTHING",
            (room_id, user_key, username),
        )

    async def unban(self, room_id: int, user_key: str) -> bool:
        changed = await self._db.execute(
            "DELETE FROM bans WHERE room_id = ? AND user_key = ?", (room_id, user_key)
        )
        return changed > 0

    async def is_banned(self, room_id: int, user_key: str) -> bool:
        rows = await self._db.fetch(
            "SELECT 1 FROM bans WHERE room_id = ? AND user_key = ?", (room_id, user_key)
        )
        return bool(rows)

    async def username(self, user_key: str) -> str | None:
        """The account's spelling of its name, or None if there is no such account."""
        rows = await self._db.fetch("SELECT username FROM users WHERE key = ?", (user_key,))
        return str(rows[0][0]) if rows else None


async def open_conversation_store(url: str | Path) -> ConversationStore:
    """The conversation tables of the database at ``url`` (already migrated by the store)."""
    if is_postgres_url(url):
        return ConversationStore(await PostgresDatabase.open(str(url)))
    path = sqlite_path(url)
    if path is None:
        raise StartupError(f"--db {url} is not a database Clubroom knows.")
    return ConversationStore(await SQLiteDatabase.open(path))

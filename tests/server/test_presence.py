"""The room registry's ordering rules, driven directly (it does no I/O by design)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from clubroom_server.rooms import Rooms
from clubroom_server.store import RoomRecord


@dataclass(frozen=True)
class Conn:
    username: str
    user_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_key", self.username.lower())


class Inbox:
    """Collects what the registry delivers, per connection."""

    def __init__(self) -> None:
        self.got: dict[Conn, list[bytes]] = {}

    def __call__(self, conns: Iterable[Conn], data: bytes) -> None:  # the fan-out
        for conn in conns:
            self.got.setdefault(conn, []).append(data)


def registry() -> tuple[Rooms, Inbox, list[int]]:
    inbox, deleted = Inbox(), []
    rooms = Rooms(grace=0, fanout=inbox, on_deleted=lambda room: deleted.append(room.id))
    return rooms, inbox, deleted


async def test_a_message_in_the_snapshot_is_not_delivered_again() -> None:
    """Committed, read by the snapshot, announced only after: the joiner gets it once."""
    rooms, inbox, _ = registry()
    room = rooms.add(RoomRecord(1, "Lobby", "lobby"))
    ann = Conn("ann")
    rooms.attach(room, ann)
    rooms.go_live(room, ann, last_id=5, live=True)  # the snapshot ended with message 5
    rooms.publish_message(room, 5, b"five")  # ...whose announcement comes late
    rooms.publish_message(room, 6, b"six")
    assert inbox.got[ann] == [b"six"]


async def test_messages_announced_while_joining_follow_the_reply() -> None:
    """Events that arrive during the snapshot read are buffered; only newer ones are sent."""
    rooms, inbox, _ = registry()
    room = rooms.add(RoomRecord(1, "Lobby", "lobby"))
    ann = Conn("ann")
    rooms.attach(room, ann)
    rooms.publish_message(room, 7, b"seven")
    rooms.publish_message(room, 8, b"eight")
    assert ann not in inbox.got
    rooms.go_live(room, ann, last_id=7, live=True)
    assert inbox.got[ann] == [b"eight"]


async def test_the_last_leave_deletes_and_frees_the_name() -> None:
    """An explicit leave of the last connection deletes the room at once."""
    rooms, _, deleted = registry()
    room = rooms.add(RoomRecord(3, "Lobby", "lobby"))
    ann = Conn("ann")
    rooms.attach(room, ann)
    rooms.detach(room, ann, grace=False)
    assert deleted == [3] and rooms.get("lobby") is None and room.deleted

"""What leaving would destroy: the rooms in which the user is the last member.

The server deletes a room and every message in it when its last member leaves
(or logs out, or stays away longer than the grace period). Every confirmation
that guards such a step names the rooms and, when the client knows it, how
many messages go with them.
"""

from __future__ import annotations

from clubroom_tui.client import ClubroomClient, RoomState
from clubroom_tui.plain import printable


def is_last_member(client: ClubroomClient, state: RoomState) -> bool:
    """True when nobody but this user is in the room's member list."""
    me = (client.username or "").casefold()
    return all(member.casefold() == me for member in state.members)


def rooms_deleted_by_leaving(client: ClubroomClient) -> list[RoomState]:
    """The user's rooms that would be deleted if they left them all now."""
    rooms = sorted(client.rooms.values(), key=lambda state: state.name.lower())
    return [state for state in rooms if is_last_member(client, state)]


def what_goes(state: RoomState) -> str:
    """``“den” and its 74 messages``, or ``… and all its messages`` when the count is unknown.

    The count is exact only when the client holds the room's whole history
    (nothing older to fetch); otherwise it does not guess.
    """
    name = f"“{printable(state.name)}”"
    if state.has_older:
        return f"{name} and all its messages"
    count = len(state.messages)
    if count == 0:
        return f"{name} (it has no messages)"
    return f"{name} and its {count} message{'s' if count != 1 else ''}"


def describe_rooms(rooms: list[RoomState]) -> str:
    """The rooms, each with what goes with it, in one readable phrase."""
    parts = [what_goes(state) for state in rooms]
    if len(parts) == 1:
        return parts[0]
    return "; ".join(parts[:-1]) + "; and " + parts[-1]

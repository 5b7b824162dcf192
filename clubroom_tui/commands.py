"""Slash commands typed in the composer: what each one is, and how a line is read.

A line starting with ``/`` is a command, never a message, so a typo cannot
be sent to the room by accident; ``//text`` sends ``/text`` as a message.
Parsing is separate from doing (``screens/room.py`` does), so it is easy to
test and to list in ``/help``.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMANDS: dict[str, tuple[str, str]] = {
    "join": ("ROOM", "join (or open) a room"),
    "leave": ("", "leave this room (asks first)"),
    "me": ("ACTION", "say what you are doing: * you ACTION"),
    "topic": ("[TEXT]", "show the topic; the owner sets it (/topic - clears it)"),
    "kick": ("USER [REASON]", "owner: remove USER from the room (they may rejoin)"),
    "ban": ("USER [REASON]", "owner: remove USER and keep them out"),
    "unban": ("USER", "owner: let USER join again"),
    "invite": ("USER", "owner of a private room: let USER join it"),
    "msg": ("USER [TEXT]", "open the direct-message room with USER (and send TEXT)"),
    "who": ("", "list the members, the owner and who is typing"),
    "admin": ("", "administrators: open the admin screen (all rooms and users)"),
    "help": ("", "list these commands"),
    "quit": ("", "quit Clubroom (asks first if that could delete rooms)"),
}

# Only offered to (and understood for) accounts whose welcome said admin.
ADMIN_ONLY = frozenset({"admin"})


@dataclass(frozen=True)
class Command:
    name: str
    args: str  # the rest of the line, trimmed

    def words(self, most: int) -> list[str]:
        """Split the arguments into at most ``most`` parts (the last keeps its spaces)."""
        return self.args.split(None, most - 1) if self.args else []


@dataclass(frozen=True)
class Unknown:
    name: str

    @property
    def hint(self) -> str:
        return (
            f"Unknown command /{self.name}. Type /help for the list; "
            f"to send a message starting with '/', start it with '//'."
        )


def parse(line: str, *, admin: bool = False) -> Command | Unknown | str:
    """A command, an unknown command, or (for anything else) the message text to send.

    Admin commands are unknown to everyone else, as if they did not exist.
    """
    if not line.startswith("/"):
        return line
    if line.startswith("//"):
        return line[1:]
    name, _, args = line[1:].partition(" ")
    name = name.strip().casefold()
    if name not in COMMANDS or (name in ADMIN_ONLY and not admin):
        return Unknown(name)
    return Command(name, args.strip())


def complete_command(stem: str, *, admin: bool = False) -> str | None:
    """``/to`` → ``/topic ``: the one command starting so, or as far as they agree."""
    offered = (name for name in COMMANDS if admin or name not in ADMIN_ONLY)
    matches = sorted(name for name in offered if name.startswith(stem.casefold()))
    if not matches:
        return None
    if len(matches) == 1:
        return f"/{matches[0]} "
    common = matches[0]
    for other in matches[1:]:
        while not other.startswith(common):
            common = common[:-1]
    return f"/{common}" if len(common) > len(stem) else None


def help_text(*, admin: bool = False) -> str:
    lines = [
        f"/{name} {usage}".rstrip() + f" — {what}"
        for name, (usage, what) in COMMANDS.items()
        if admin or name not in ADMIN_ONLY
    ]
    return "\n".join(["Commands:", *lines, "//text sends text starting with '/'."])

"""The "Remember me" store: the login token and one's rooms, per server, on disk.

The file lives in the user's config directory and is written with mode 0600,
because the token is as good as the password for 30 days.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

FILE_NAME = "sessions.json"


def default_config_dir() -> Path:
    """Where Clubroom keeps its settings for this user (per platform conventions)."""
    return Path(platformdirs.user_config_dir("clubroom", appauthor=False))


@dataclass(frozen=True)
class SavedSession:
    """A remembered login for one server."""

    token: str
    rooms: tuple[str, ...] = ()


class SessionStore:
    """Saved sessions keyed by server URL, in ``<config dir>/sessions.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME

    def load(self, url: str) -> SavedSession | None:
        """The session saved for this server, or None (also for an unreadable file)."""
        entry = self._read().get(url)
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        rooms = entry.get("rooms")
        valid_rooms = (
            tuple(r for r in rooms if isinstance(r, str)) if isinstance(rooms, list) else ()
        )
        return SavedSession(token=entry["token"], rooms=valid_rooms)

    def save(self, url: str, session: SavedSession) -> None:
        data = self._read()
        data[url] = {"token": session.token, "rooms": list(session.rooms)}
        self._write(data)

    def forget(self, url: str) -> None:
        data = self._read()
        if data.pop(url, None) is not None:
            self._write(data)

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, object]) -> None:
        """Write atomically, readable by the owner only whatever the umask."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(data, indent=2).encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

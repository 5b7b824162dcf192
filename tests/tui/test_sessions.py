"""The "Remember me" store: private file, one entry per server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from clubroom_tui.sessions import SavedSession, SessionStore


def test_saved_file_is_owner_only_even_with_a_lax_umask(tmp_path: Path) -> None:
    """The token file is mode 0600 whatever the umask."""
    old = os.umask(0)
    try:
        SessionStore(tmp_path / "cfg").save("ws://a", SavedSession("t1"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cfg" / "sessions.json").stat().st_mode) == 0o600


def test_sessions_are_kept_per_server(tmp_path: Path) -> None:
    """A token saved for one server is not offered to another, and forgetting is per server."""
    store = SessionStore(tmp_path)
    store.save("ws://a", SavedSession("ta", ("lobby",)))
    store.save("ws://b", SavedSession("tb"))
    store.forget("ws://b")
    assert store.load("ws://a") == SavedSession("ta", ("lobby",))
    assert store.load("ws://b") is None


def test_a_damaged_file_means_no_saved_session(tmp_path: Path) -> None:
    """An unreadable file is treated as "nothing remembered", not as a crash."""
    (tmp_path / "sessions.json").write_text("{not json")
    assert SessionStore(tmp_path).load("ws://a") is None

"""One frozen settings object for the server, filled from flags and ``CLUBROOM_*``."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

import argon2
import platformdirs

from clubroom_server.store.interface import DEFAULT_SEARCH_TIMEOUT
from protocol import DEFAULT_PORT, MAX_FRAME_BYTES

ARGON2_PROFILES: dict[str, argon2.Parameters] = {
    "rfc9106-low-memory": argon2.profiles.RFC_9106_LOW_MEMORY,
    "rfc9106-high-memory": argon2.profiles.RFC_9106_HIGH_MEMORY,
    "cheapest": argon2.profiles.CHEAPEST,
}
DEFAULT_ARGON2_PROFILE = "rfc9106-low-memory"

RESTART_ONLY: tuple[str, ...] = (
    "host",
    "port",
    "db",
    "db_pool_size",
    "commit_interval",
    "search_timeout",
    "argon2_profile",
    "hash_workers",
    "synchronous",
    "max_frame",
    "handshake_timeout",
    "ping_interval",
    "log_format",
    "metrics_address",
    "event_loop",
)
"""Settings a SIGHUP reload cannot change (sockets, database, thread pools are built with them)."""


def default_db_path() -> Path:
    """The database in the user's data directory, e.g. ``~/.local/share/clubroom``."""
    return Path(platformdirs.user_data_dir("clubroom", appauthor=False)) / "clubroom.db"


def default_db() -> str:
    """The default ``--db``: the SQLite file in the user's data directory."""
    return str(default_db_path())


def default_node_id() -> str:
    """Unique without configuration: host name, process id and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Settings:
    """Everything an operator can tune; defaults are the safe, documented ones."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str = field(default_factory=default_db)
    grace: float = 30.0
    rate_limit: float = 5.0
    rate_burst: int = 10
    room_rate_limit: float = 2.0
    room_rate_burst: int = 20
    max_frame: int = MAX_FRAME_BYTES
    argon2_profile: str = DEFAULT_ARGON2_PROFILE
    hash_workers: int = 2
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_window: float = 60.0
    max_connections_per_address: int = 200
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    ping_interval: float = 20.0
    send_buffer_limit: int = 4 * 1024 * 1024
    synchronous: str = "FULL"
    certfile: Path | None = None
    keyfile: Path | None = None
    log_level: str = "INFO"
    # Hardening, round 2 (issue 10): new fields stay at the end to ease merging.
    hash_queue_limit: int = 32
    registrations_per_address: int = 20
    registrations_total: int = 200
    registration_window: float = 3600.0
    backlog_limit: int = 1024 * 1024
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    max_handshakes_per_address: int = 64
    max_handshakes: int = 2048
    db_pool_size: int = 10
    log_format: str = "text"
    metrics_address: str = "off"
    drain_timeout: float = 10.0
    # A cluster: a Redis URL turns this process into one node of many (None = one process).
    bus: str | None = None
    node_id: str = field(default_factory=default_node_id)
    bus_prefix: str = "clubroom"
    node_lease: float = 10.0  # seconds; renewed every third of it
    event_loop: str = "auto"  # auto (uvloop when installed), uvloop or asyncio
    commit_interval: float = 0.01  # seconds between commits while writes stream in (pacing.py)
    search_timeout: float = DEFAULT_SEARCH_TIMEOUT  # seconds a search may run, then invalid_query

    @property
    def argon2_parameters(self) -> argon2.Parameters:
        """The argon2id cost parameters named by ``argon2_profile``."""
        return ARGON2_PROFILES[self.argon2_profile]

    @property
    def scheme(self) -> str:
        """``wss`` when a certificate is configured, else ``ws``."""
        return "wss" if self.certfile else "ws"

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (settings themselves never change)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

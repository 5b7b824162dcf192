"""The one place logging is configured: level, text or JSON lines, and per-connection context.

Nothing configures logging at import time; ``configure`` runs once when the
server starts (and again on SIGHUP for a new level). Context — the node, the
connection id and the user — travels in context variables: ``websockets``
runs each connection in its own task, so a value bound in the session is
seen by every log call made on that connection's behalf, and by no other.

What is never logged: passwords, tokens, hashes and message text. The
libraries that would log them at DEBUG (``websockets`` logs every frame,
``aiosqlite`` every call with its arguments) are held above DEBUG here,
whatever level the operator asks for.
"""

from __future__ import annotations

import contextvars
import json
import logging
import socket
import sys
import time
from typing import Final, TextIO

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")

WEBSOCKETS_LOGGER: Final = "clubroom_server.websockets"
"""The logger handed to ``websockets.serve``: it logs whole frames at DEBUG."""

# Loggers that would write secrets at DEBUG, and the lowest level they may use.
_MUTED: Final = {WEBSOCKETS_LOGGER: logging.WARNING, "aiosqlite": logging.INFO}

_connection: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "clubroom_connection", default=None
)
_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("clubroom_user", default=None)
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"


def bind_connection(connection_id: str) -> None:
    """Name the connection the current task serves, in every later log line of it."""
    _connection.set(connection_id)


def bind_user(username: str | None) -> None:
    """Name the user the current connection is logged in as (None after logout)."""
    if _user.get() != username:
        _user.set(username)


class ContextFilter(logging.Filter):
    """Adds ``node``, ``connection`` and ``user`` to every record that passes."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        record.connection = _connection.get()
        record.user = _user.get()
        parts = [f"{k}={v}" for k in ("connection", "user") if (v := getattr(record, k))]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, event, and the context that is set."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "node": getattr(record, "node", None),
        }
        for key in ("connection", "user"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _iso_time(created: float) -> str:
    """RFC 3339 UTC with milliseconds, the form log shippers parse without configuration."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(
    level: str = "INFO",
    fmt: str = "text",
    node: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every log record to ``stream`` (stderr) at ``level``, as text or JSON lines.

    Safe to call again (a reload): the previous handler is replaced, not doubled.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter(node or socket.gethostname()))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_clubroom", False):
            root.removeHandler(old)
    handler._clubroom = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the level at once (SIGHUP); the secret-bearing loggers stay muted."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.getLogger().setLevel(numeric)
    protect_secrets()


def protect_secrets() -> None:
    """Hold the loggers that would write secrets at DEBUG above it (idempotent).

    Called by ``configure`` and by the server itself when it is built, so a
    server embedded in another program (or a test) is just as safe.
    """
    for name, floor in _MUTED.items():
        logger = logging.getLogger(name)
        if logger.level < floor:
            logger.setLevel(floor)

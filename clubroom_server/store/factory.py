"""Choosing the backend from the ``--db`` value.

* a file path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``
  (SQLAlchemy's spelling): the embedded SQLite backend;
* ``postgresql://user@host:port/database`` (or ``postgres://``): PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from clubroom_server.store.interface import DEFAULT_SEARCH_TIMEOUT, StartupError, Store

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(url: str | Path) -> bool:
    return isinstance(url, str) and urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlite_path(url: str | Path) -> Path | None:
    """The file a SQLite ``--db`` value names, or None if it names no file."""
    if isinstance(url, Path):
        return url
    if url.startswith(SQLITE_PREFIX):
        return Path(url[len(SQLITE_PREFIX) :]).expanduser()
    if "://" in url:
        return None
    return Path(url).expanduser()


def describe_url(url: str | Path) -> str:
    """The database a ``--db`` value names, fit for a log line (never a password)."""
    if is_postgres_url(url):
        parts = urlsplit(str(url))
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        database = parts.path.lstrip("/") or parts.username or "postgres"
        return f"PostgreSQL database {database!r} on {host}{port}"
    path = sqlite_path(url)
    return str(path) if path is not None else "an unknown kind of database"


def make_store(
    url: str | Path,
    *,
    synchronous: str = "FULL",
    pool_size: int = 10,
    commit_interval: float = 0.0,
    search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
) -> Store:
    """The store for ``url``, not yet open (``StartupError`` for an unknown kind of URL).

    ``commit_interval``: see ``pacing.CommitPacer`` (0: every batch at once).
    """
    if is_postgres_url(url):
        from clubroom_server.store.postgres import PostgresStore

        return PostgresStore(
            str(url),
            pool_size=pool_size,
            commit_interval=commit_interval,
            search_timeout=search_timeout,
        )
    path = sqlite_path(url)
    if path is None:
        scheme = urlsplit(str(url)).scheme
        raise StartupError(
            f"--db {scheme}://… is not a database Clubroom knows; "
            "use a file path, sqlite:///path or postgresql://user@host:port/database."
        )
    from clubroom_server.store.sqlite import SQLiteStore

    return SQLiteStore(
        path, synchronous, commit_interval=commit_interval, search_timeout=search_timeout
    )


async def open_store(
    url: str | Path,
    *,
    synchronous: str = "FULL",
    pool_size: int = 10,
    search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
) -> Store:
    """The store for ``url``, opened: connected, migrated, writer running."""
    store = make_store(
        url, synchronous=synchronous, pool_size=pool_size, search_timeout=search_timeout
    )
    await store.open()
    return store

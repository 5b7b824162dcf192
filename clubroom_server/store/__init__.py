"""Storage: one interface (``interface.Store``), SQLite and PostgreSQL behind it.

``open_store(url)`` picks the backend from the ``--db`` value: a file path or
``sqlite:///path`` is SQLite, ``postgresql://…`` is PostgreSQL. Callers import
from here only: the records, the error tree, the interface and the factory.
"""

from __future__ import annotations

from clubroom_server.store.factory import (
    describe_url,
    is_postgres_url,
    make_store,
    open_store,
    sqlite_path,
)
from clubroom_server.store.interface import (
    DuplicateError,
    NotFoundError,
    OnStored,
    SchemaError,
    SearchTooSlow,
    StartupError,
    Store,
    StoreError,
    UnavailableError,
)
from clubroom_server.store.records import (
    HighWater,
    MessageRecord,
    RoomRecord,
    TokenRecord,
    UserRecord,
)
from clubroom_server.store.sqlite import SYNCHRONOUS_MODES

__all__ = [
    "SYNCHRONOUS_MODES",
    "DuplicateError",
    "HighWater",
    "MessageRecord",
    "NotFoundError",
    "OnStored",
    "RoomRecord",
    "SchemaError",
    "SearchTooSlow",
    "StartupError",
    "Store",
    "StoreError",
    "TokenRecord",
    "UnavailableError",
    "UserRecord",
    "describe_url",
    "is_postgres_url",
    "make_store",
    "open_store",
    "sqlite_path",
]

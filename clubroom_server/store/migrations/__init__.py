"""Numbered schema migrations, one folder per backend: ``NNNN_what.sql``.

A database records the number of the last migration applied to it (SQLite:
``PRAGMA user_version``; PostgreSQL: the ``schema_migrations`` table), and on
start every later one is applied in order, each in its own transaction.
"""

from __future__ import annotations

from importlib import resources


def scripts(backend: str) -> list[str]:
    """The migration scripts of ``backend`` (``sqlite`` or ``postgres``), number 1 first."""
    folder = resources.files(__package__).joinpath(backend)
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    for number, name in enumerate(names, start=1):
        if int(name.split("_", 1)[0]) != number:
            raise RuntimeError(f"migration {name} is out of sequence (expected {number:04d}_…)")
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in names]

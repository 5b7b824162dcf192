"""Database chores behind ``clubroom-server migrate`` and ``copy``, without the click part.

Each returns the one line to print, or raises ``StartupError`` with the one
sentence that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clubroom_server.store import (
    MessageRecord,
    StartupError,
    Store,
    StoreError,
    describe_url,
    open_store,
    sqlite_path,
)

COPY_BATCH = 2000
# What the copy summary counts (a room's owner and topic travel with it, uncounted).
SUMMARY = ("users", "tokens", "rooms", "messages", "memberships", "mentions", "bans", "invitations")


async def migrate(url: str) -> str:
    """Open (which applies pending migrations) and close again."""
    store = await open_store(url)
    await store.close()
    return f"{describe_url(url)} is up to date."


async def copy(source: str, target: str, progress: Callable[[str], None] = print) -> str:
    """Copy everything from ``source`` into the empty ``target``, ids and seqs kept."""
    if _same_database(source, target):
        raise StartupError("--from and --to name the same database; copy into another one.")
    origin = await open_store(source)
    try:
        destination = await open_store(target)
        try:
            return await _copy_all(origin, destination, target, progress)
        finally:
            await destination.close()
    finally:
        await origin.close()


async def _copy_all(
    origin: Store, destination: Store, target: str, progress: Callable[[str], None]
) -> str:
    if not await destination.is_empty():
        raise StartupError(
            f"{describe_url(target)} already holds data; copy only into a new, empty database."
        )
    counts: dict[str, int] = {}
    try:
        async for batch in origin.dump(COPY_BATCH):
            await destination.load(batch)
            kind = type(batch[0]).__name__.removesuffix("Record").lower() + "s"
            counts[kind] = counts.get(kind, 0) + len(batch)
            if isinstance(batch[0], MessageRecord):
                progress(f"… {counts[kind]} messages")
        await destination.raise_high_water(await origin.high_water())
    except StoreError as exc:
        raise StartupError(
            f"Copying into {describe_url(target)} failed ({exc}); the target now holds part "
            "of the data: empty it before trying again."
        ) from None
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in SUMMARY)
    return f"Copied {summary} into {describe_url(target)}."


def _same_database(source: str, target: str) -> bool:
    paths = sqlite_path(source), sqlite_path(target)
    if None in paths:
        return source == target
    first, second = (Path(p).resolve() for p in paths if p is not None)
    return first == second

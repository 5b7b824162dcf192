"""Store-level throughput: appends per second with 1, 10 and 100 concurrent writers.

Runs the real stores (no server, no network to clients) on both backends,
with the server's defaults (SQLite ``synchronous=FULL``; PostgreSQL as
configured), so the numbers say what the database layer alone can take:

    python -m bench.store --postgres postgresql://postgres@127.0.0.1:5432/test

The PostgreSQL URL must allow creating a database; a fresh one is created
for the run and dropped after it. Without ``--postgres`` only SQLite runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from clubroom_server.store import Store, open_store

WRITERS = (1, 10, 100)
TEXT = "x" * 100  # a typical chat line


async def appends_per_second(store: Store, writers: int, seconds: float) -> float:
    """Appends committed per second with ``writers`` tasks appending back to back."""
    user = await store.add_user(f"u{writers}", f"u{writers}", "$argon2id$bench", 0)
    room = await store.add_room(f"r{writers}", f"r{writers}", 0)
    done = 0
    deadline = time.monotonic() + seconds

    async def writer() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await store.append_message(room.id, user.id, user.username, TEXT, 0)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return done / (time.monotonic() - started)


@contextlib.asynccontextmanager
async def fresh_postgres(admin_url: str) -> AsyncIterator[str]:
    import asyncpg

    name = f"clubroom_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def measure(url: str, seconds: float) -> dict[int, float]:
    store = await open_store(url)
    try:
        return {n: await appends_per_second(store, n, seconds) for n in WRITERS}
    finally:
        await store.close()


async def main(postgres: str | None, seconds: float) -> None:
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="clubroom-bench-") as folder:
        results["SQLite (synchronous=FULL)"] = await measure(
            str(Path(folder) / "bench.db"), seconds
        )
    if postgres:
        async with fresh_postgres(postgres) as url:
            results["PostgreSQL"] = await measure(url, seconds)
    print("| backend | " + " | ".join(f"{n} writer{'s' * (n > 1)}" for n in WRITERS) + " |")
    print("|---|" + "---|" * len(WRITERS))
    for backend, rates in results.items():
        print(f"| {backend} | " + " | ".join(f"{rates[n]:,.0f}/s" for n in WRITERS) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL to create a database on")
    parser.add_argument("--seconds", type=float, default=3.0, help="per writer count")
    options = parser.parse_args()
    asyncio.run(main(options.postgres, options.seconds))

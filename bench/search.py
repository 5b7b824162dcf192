"""Search latency: p50/p99 of ``search_messages`` over a room of 100,000 messages.

Runs the real stores on both backends (SQLite FTS5; PostgreSQL tsvector + GIN)
with a room filled through ``load`` (the same rows, triggers and generated
columns as sends make, only faster to fill), then times searches of common
and rare words, two words and phrases, newest first and best first:

    python -m bench.search --postgres postgresql://postgres@127.0.0.1:5432/test

After the fill (and, on PostgreSQL, a VACUUM ANALYZE) 2,000 more messages
are sent the ordinary way, so the indexes hold recent entries as in a room in
use. Each kind is timed in interleaved passes; the table gives p50 and p99
over all, and the best and worst pass's p99 (the spread the machine's other
load adds). Then deletions: how long the answer takes, on SQLite how long
until the words have left the index, and sends meanwhile.

Target: p99 ≤ 50 ms. Without ``--postgres`` only SQLite runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.stats import Latency
from bench.store import fresh_postgres
from clubroom_server.search import parse_query
from clubroom_server.store import HighWater, MessageRecord, RoomRecord, Store, open_store
from clubroom_server.store.changes import ChangeKind, MessageChange

MESSAGES = 100_000
TALK = 2_000  # messages sent after the fill (and its VACUUM), before timing
BATCH = 5_000
VOCABULARY = 20_000
QUERIES = ("common", "rare", "two words", "phrase")


def vocabulary(rng: random.Random) -> list[str]:
    """Made-up words; chosen with a Zipf-like skew, as words in chat are."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(VOCABULARY)]


def sentence(rng: random.Random, words: list[str], weights: list[float]) -> str:
    """5–20 words; ``weights`` are cumulative (computed once, not per call)."""
    return " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(5, 20)))


async def fill(store: Store, rng: random.Random, words: list[str], weights: list[float]) -> int:
    user = await store.add_user("bench", "bench", "$argon2id$bench", 0)
    room = RoomRecord(id=1, name="search", key="search", last_seq=MESSAGES)
    await store.load([room])  # as ``copy`` does: the room's seq, ids and all
    for start in range(0, MESSAGES, BATCH):
        await store.load(
            [
                MessageRecord(
                    id=10 + n,
                    room_id=room.id,
                    seq=n + 1,
                    author_id=user.id,
                    author="bench",
                    text=sentence(rng, words, weights),
                    at_ms=n,
                )
                for n in range(start, min(start + BATCH, MESSAGES))
            ]
        )
    await store.raise_high_water(HighWater(users=user.id, rooms=1, messages=10 + MESSAGES))
    return room.id


async def settle(url: str) -> None:
    """On PostgreSQL, do what autovacuum soon does after a bulk fill.

    ``VACUUM ANALYZE`` merges the GIN index's pending list (which every query
    scans until then) and gives the planner its statistics: the steady state
    a long-lived room is in, rather than the minute after a bulk load.
    """
    if not url.startswith("postgres"):
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()


async def talk(store: Store, room_id: int, texts: list[str]) -> None:
    """Sends after the fill, as in a room in use: index entries not merged in yet."""
    user = await store.user_by_key("bench")
    assert user is not None
    await asyncio.gather(
        *(store.append_message(room_id, user.id, "bench", text, 0) for text in texts)
    )


def query_of(kind: str, rng: random.Random, words: list[str]) -> str:
    common, rare = words[:50], words[VOCABULARY // 2 :]
    if kind == "common":
        return rng.choice(common)
    if kind == "rare":
        return rng.choice(rare)
    if kind == "two words":
        return f"{rng.choice(common)} {rng.choice(words[:2000])}"
    return f'"{rng.choice(common)} {rng.choice(common)}"'


Row = tuple[str, ...]


async def measure(url: str, rounds: int, passes: int) -> dict[str, Row]:
    rng = random.Random(16)
    words = vocabulary(rng)
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(VOCABULARY)))
    store = await open_store(url)
    try:
        started = time.monotonic()
        room_id = await fill(store, rng, words, weights)
        print(f"  filled {MESSAGES:,} messages in {time.monotonic() - started:.1f} s")
        await settle(url)
        await talk(store, room_id, [sentence(rng, words, weights) for _ in range(TALK)])
        results = await searches(store, room_id, rng, words, rounds, passes)
        results.update(await deletions(store, room_id))
        return results
    finally:
        await store.close()


async def searches(
    store: Store, room_id: int, rng: random.Random, words: list[str], rounds: int, passes: int
) -> dict[str, Row]:
    """Every query kind and order, ``rounds`` queries each, in ``passes`` interleaved passes.

    Passes take turns (all kinds, then all kinds again), so a burst of load
    from elsewhere on the machine lands on every kind rather than one; the
    spread of the passes' p99 shows how much of the p99 is that load.
    """
    shapes = [(kind, newest) for kind in QUERIES for newest in (True, False)]
    timings: dict[tuple[str, bool], list[list[int]]] = {shape: [] for shape in shapes}
    for _ in range(passes):
        for kind, newest in shapes:
            taken = []
            for _ in range(rounds):
                phrases = parse_query(query_of(kind, rng, words))
                began = time.perf_counter_ns()
                await store.search_messages(room_id, phrases, newest, 0, 20)
                taken.append(time.perf_counter_ns() - began)
            timings[kind, newest].append(taken)
    results: dict[str, Row] = {}
    for (kind, newest), runs in timings.items():
        label = f"{kind}, {'newest' if newest else 'best'} first"
        results[label] = spread(runs)
    return results


def spread(runs: list[list[int]]) -> Row:
    """p50 and p99 over every run, and the lowest and highest p99 of a single run."""
    overall = Latency.of(t for run in runs for t in run)
    per_run = [Latency.of(run).p99_ms or 0.0 for run in runs]
    return (
        f"{overall.p50_ms or 0.0:.1f}",
        f"{overall.p99_ms or 0.0:.1f}",
        f"{min(per_run):.1f}–{max(per_run):.1f}",
    )


async def deletions(store: Store, room_id: int, count: int = 10) -> dict[str, Row]:
    """Deleting a message in the full room: the answer, the erasure, sends meanwhile.

    On SQLite the words leave the FTS5 index in the background (``purge``),
    then the WAL is truncated. Each deletion waits for that (and half a
    second more, for the checkpoint) before the next, while a sender appends
    a message every 10 ms: against a second of sends with nothing else going
    on, that shows what a purge costs the room's sends.
    """
    user = await store.user_by_key("bench")
    assert user is not None
    purger = getattr(store, "search_purger", None)
    answers: list[int] = []
    erasures: list[int] = []
    quiet: list[int] = []
    purging: list[int] = []
    async with sending(store, room_id, user.id, quiet):
        await asyncio.sleep(1.0)
    for n in range(count):
        change = MessageChange(ChangeKind.DELETE, room_id, 10 + n * 997, user.id, "bench", 0)
        rounds = purger.rounds if purger else 0
        async with sending(store, room_id, user.id, purging):
            began = time.perf_counter_ns()
            await store.change_message(change)
            answers.append(time.perf_counter_ns() - began)
            if purger is not None:
                await purger.wait_past(rounds)
                erasures.append(time.perf_counter_ns() - began)
            await asyncio.sleep(0.5)
    results = {"delete: answered": spread([answers])}
    if erasures:
        results["delete: words out of the index"] = spread([erasures])
    results["send, nothing else going on"] = spread([quiet])
    results["send while deleting" + (" and purging" if purger else "")] = spread([purging])
    return results


@contextlib.asynccontextmanager
async def sending(
    store: Store, room_id: int, user_id: int, timings: list[int]
) -> AsyncIterator[None]:
    """Keep a sender appending (``keep_sending``) while the block runs."""
    sender = asyncio.create_task(keep_sending(store, room_id, user_id, timings))
    try:
        yield
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def keep_sending(store: Store, room_id: int, user_id: int, timings: list[int]) -> None:
    """Append a message every 10 ms, noting how long each takes."""
    while True:
        began = time.perf_counter_ns()
        await store.append_message(room_id, user_id, "bench", "meanwhile", 0)
        timings.append(time.perf_counter_ns() - began)
        await asyncio.sleep(0.01)


async def main(postgres: str | None, rounds: int, passes: int) -> None:
    tables: dict[str, dict[str, Row]] = {}
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="clubroom-bench-") as folder:
        print("SQLite (FTS5)")
        tables["SQLite"] = await measure(str(Path(folder) / "bench.db"), rounds, passes)
    if postgres:
        async with fresh_postgres(postgres) as url:
            print("PostgreSQL (tsvector + GIN)")
            tables["PostgreSQL"] = await measure(url, rounds, passes)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("(ms: p50 / p99 over all queries; p99 of the best and worst pass)")
    print("| query | " + " | ".join(f"{b} p50 / p99 (pass p99)" for b in tables) + " |")
    print("|---|" + "---|" * len(tables))
    labels = dict.fromkeys(label for table in tables.values() for label in table)
    for label in labels:
        cells = [
            f"{t[label][0]} / {t[label][1]} ({t[label][2]})" if label in t else "—"
            for t in tables.values()
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL to create a database on")
    parser.add_argument("--rounds", type=int, default=50, help="queries per kind, order, pass")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes over the kinds")
    options = parser.parse_args()
    asyncio.run(main(options.postgres, options.rounds, options.passes))

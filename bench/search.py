"""Search latency: p50/p99 of ``search_messages`` over a 100,000-message room among others.

Runs the real stores on both backends (SQLite FTS5; PostgreSQL tsvector + GIN)
on a database filled through ``load`` (the same rows, triggers and generated
columns as sends make, only faster to fill): the searched room's 100,000
messages and as many in three other rooms, interleaved by id as rooms that
talk at the same time are. Then it times what users and adversaries type
(``KINDS``): very common and rare words, a word in nearly every message,
words frequent in the other rooms but absent or rare in this one, two words,
ten words, phrases, operator-looking input, and deep pages; newest first and
best first:

    python -m bench.search --postgres postgresql://postgres@127.0.0.1:5432/test

After the fill (and, on PostgreSQL, a VACUUM ANALYZE) 2,000 more messages
are sent the ordinary way, so the indexes hold recent entries as in a room in
use. Each kind is timed in interleaved passes; the table gives p50 and p99
over all, and the best and worst pass's p99 (the spread the machine's other
load adds), and how many searches the store stopped at its ``search_timeout``.
Then deletions: how long the answer takes, on SQLite how long until the words
have left the index, and sends meanwhile.

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Latency
from bench.store import fresh_postgres
from clubroom_server.search import parse_query
from clubroom_server.store import (
    HighWater,
    MessageRecord,
    RoomRecord,
    SearchTooSlow,
    Store,
    open_store,
)
from clubroom_server.store.changes import ChangeKind, MessageChange

MESSAGES = 100_000  # in the searched room
ELSEWHERE = 100_000  # in the other rooms together
OTHER_ROOMS = 3
TALK = 2_000  # messages sent after the fill (and its VACUUM), before timing
BATCH = 5_000
VOCABULARY = 20_000
PAGE = 20
# Words longer than the vocabulary's (3–9 letters), so never drawn by chance.
# In 97 % of the filled messages, like "the" or "ok", and in none of the 2,000
# sent after the fill: a word common in a room's past, absent from its present.
EVERYWHERE = "everywhereword"
ABSENT_HERE = [f"elsewhereonly{c}" for c in "abcde"]  # each in 30 % of the other rooms' messages
RARE_HERE = [f"mostlyelsewhere{c}" for c in "abcde"]  # same, and in 5 old messages here
RARE_HERE_COUNT = 5


@dataclass(frozen=True)
class Words:
    """The made-up vocabulary (Zipf-like skew, as words in chat are) and its weights."""

    words: list[str]
    weights: list[float]  # cumulative, computed once

    @classmethod
    def made(cls, rng: random.Random) -> Words:
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(VOCABULARY)]
        weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(VOCABULARY)))
        return cls(words, weights)

    def sentence(self, rng: random.Random) -> list[str]:
        """5–20 words."""
        return rng.choices(self.words, cum_weights=self.weights, k=rng.randint(5, 20))

    @property
    def common(self) -> list[str]:
        return self.words[:50]

    @property
    def rare(self) -> list[str]:
        return self.words[VOCABULARY // 2 :]


def text_here(rng: random.Random, words: Words, seq: int) -> str:
    """A message of the searched room: no ABSENT_HERE word; RARE_HERE in a few old ones."""
    said = words.sentence(rng)
    if rng.random() < 0.97:
        said.insert(rng.randrange(len(said) + 1), EVERYWHERE)
    spacing = MESSAGES // (RARE_HERE_COUNT * len(RARE_HERE) * 10)  # all in the oldest 10 %
    if seq % spacing == 0 and seq // spacing < RARE_HERE_COUNT * len(RARE_HERE):
        said.append(RARE_HERE[seq // spacing % len(RARE_HERE)])
    return " ".join(said)


def text_elsewhere(rng: random.Random, words: Words) -> str:
    """A message of another room: the same talk, and its own frequent words."""
    said = words.sentence(rng)
    if rng.random() < 0.97:
        said.insert(rng.randrange(len(said) + 1), EVERYWHERE)
    said += [word for word in ABSENT_HERE + RARE_HERE if rng.random() < 0.3]
    return " ".join(said)


async def fill(store: Store, rng: random.Random, words: Words) -> list[int]:
    """The searched room (id 1) and OTHER_ROOMS more, their messages interleaved by id.

    Returns the ids of the searched room's messages.
    """
    user = await store.add_user("bench", "bench", "$argon2id$bench", 0)
    total = MESSAGES + ELSEWHERE
    rooms = 1 + OTHER_ROOMS
    where = [1] * MESSAGES + [2 + n % OTHER_ROOMS for n in range(ELSEWHERE)]
    rng.shuffle(where)
    seqs = [0] * (rooms + 1)
    records = []
    for n, room_id in enumerate(where):
        seqs[room_id] += 1
        seq = seqs[room_id]
        text = text_here(rng, words, seq) if room_id == 1 else text_elsewhere(rng, words)
        records.append(MessageRecord(10 + n, room_id, seq, user.id, "bench", text, n))
    await store.load(
        [
            RoomRecord(id=r, name=f"room{r}", key=f"room{r}", last_seq=seqs[r])
            for r in range(1, rooms + 1)
        ]
    )
    for start in range(0, total, BATCH):
        await store.load(records[start : start + BATCH])
    await store.raise_high_water(HighWater(users=user.id, rooms=rooms, messages=10 + total))
    return [record.id for record in records if record.room_id == 1]


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


@dataclass(frozen=True)
class Kind:
    """A kind of search: what is typed, which orders, and from which result on."""

    name: str
    query: Callable[[random.Random, Words], str]
    offset: int = 0
    orders: tuple[bool, ...] = (True, False)  # newest first, best first


def _words(count: int, pool: Callable[[Words], list[str]]) -> Callable[[random.Random, Words], str]:
    return lambda rng, w: " ".join(rng.sample(pool(w), count))


def _phrase(rng: random.Random, w: Words) -> str:
    return f'"{rng.choice(w.common)} {rng.choice(w.common)}"'


def _operators(rng: random.Random, w: Words) -> str:
    """FTS and web-search syntax, which Clubroom reads as words (``or`` is one)."""
    a, b, c = rng.sample(w.common, 3)
    return f'{a} OR {b} -{c} {a[:3]}* NEAR("{b}") AND'


def _long(rng: random.Random, w: Words) -> str:
    """Ten words of the room's talk, as when a sentence is pasted in."""
    return " ".join(list(dict.fromkeys(w.sentence(rng) + rng.sample(w.common, 10)))[:10])


_common = _words(1, lambda w: w.common)
KINDS = (
    Kind("common word", _common),
    Kind("word in 97 % of messages, none of the newest 2,000", lambda rng, w: EVERYWHERE),
    Kind("rare word", _words(1, lambda w: w.rare)),
    Kind("absent here, 30 % elsewhere", lambda rng, w: rng.choice(ABSENT_HERE)),
    Kind("5 here, 30 % elsewhere", lambda rng, w: rng.choice(RARE_HERE)),
    Kind("two words", lambda rng, w: f"{rng.choice(w.common)} {rng.choice(w.words[:2000])}"),
    Kind("ten words", _long),
    Kind("phrase of common words", _phrase),
    Kind("operators typed", _operators),
    Kind("common word, page 11", _common, offset=10 * PAGE),
    Kind("common word, page 101", _common, offset=100 * PAGE),
    Kind("common word, offset 10,000", _common, offset=10_000, orders=(True,)),
)


Row = tuple[str, ...]


async def measure(url: str, rounds: int, passes: int, kinds: list[Kind]) -> dict[str, Row]:
    rng = random.Random(16)
    words = Words.made(rng)
    store = await open_store(url)
    try:
        started = time.monotonic()
        room_id = 1
        ids = await fill(store, rng, words)
        print(f"  filled {MESSAGES + ELSEWHERE:,} messages in {time.monotonic() - started:.1f} s")
        await settle(url)
        await talk(store, room_id, [" ".join(words.sentence(rng)) for _ in range(TALK)])
        results = await searches(store, room_id, rng, words, rounds, passes, kinds)
        if len(kinds) == len(KINDS):
            results.update(await deletions(store, room_id, ids[:: len(ids) // 10]))
        return results
    finally:
        await store.close()


async def searches(
    store: Store,
    room_id: int,
    rng: random.Random,
    words: Words,
    rounds: int,
    passes: int,
    kinds: list[Kind],
) -> dict[str, Row]:
    """Every kind and order, ``rounds`` queries each, in ``passes`` interleaved passes.

    Passes take turns (all kinds, then all kinds again), so a burst of load
    from elsewhere on the machine lands on every kind rather than one; the
    spread of the passes' p99 shows how much of the p99 is that load. A search
    the store stops (``SearchTooSlow``) counts with the time it took.
    """
    shapes = [(kind, newest) for kind in kinds for newest in kind.orders]
    timings: dict[tuple[Kind, bool], list[list[int]]] = {shape: [] for shape in shapes}
    stopped = dict.fromkeys(shapes, 0)
    for _ in range(passes):
        for kind, newest in shapes:
            taken = []
            for _ in range(rounds):
                phrases = parse_query(kind.query(rng, words))
                began = time.perf_counter_ns()
                try:
                    await store.search_messages(room_id, phrases, newest, kind.offset, PAGE)
                except SearchTooSlow:
                    stopped[kind, newest] += 1
                taken.append(time.perf_counter_ns() - began)
            timings[kind, newest].append(taken)
    results: dict[str, Row] = {}
    for (kind, newest), runs in timings.items():
        label = f"{kind.name}, {'newest' if newest else 'best'} first"
        results[label] = (*spread(runs), str(stopped[kind, newest]))
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


async def deletions(store: Store, room_id: int, ids: list[int]) -> dict[str, Row]:
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
    for message_id in ids[:10]:
        change = MessageChange(ChangeKind.DELETE, room_id, message_id, user.id, "bench", 0)
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


async def main(
    postgres: str | None, rounds: int, passes: int, only: str | None, sqlite: bool = True
) -> None:
    kinds = [kind for kind in KINDS if only is None or only in kind.name]
    tables: dict[str, dict[str, Row]] = {}
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="clubroom-bench-") as folder:
        if sqlite:
            print("SQLite (FTS5)")
            tables["SQLite"] = await measure(str(Path(folder) / "bench.db"), rounds, passes, kinds)
    if postgres:
        async with fresh_postgres(postgres) as url:
            print("PostgreSQL (tsvector + GIN)")
            tables["PostgreSQL"] = await measure(url, rounds, passes, kinds)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("(ms: p50 / p99 over all queries (p99 of the best–worst pass) [searches stopped])")
    print("| query | " + " | ".join(f"{b} p50 / p99 (pass p99) [stopped]" for b in tables) + " |")
    print("|---|" + "---|" * len(tables))
    labels = dict.fromkeys(label for table in tables.values() for label in table)
    for label in labels:
        cells = [cell(t[label]) if label in t else "—" for t in tables.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")


def cell(row: Row) -> str:
    """``p50 / p99 (pass p99 range)``, and ``[n]`` when the store stopped n searches."""
    text = f"{row[0]} / {row[1]} ({row[2]})"
    return text + (f" [{row[3]}]" if len(row) > 3 and row[3] != "0" else "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL to create a database on")
    parser.add_argument("--rounds", type=int, default=50, help="queries per kind, order, pass")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes over the kinds")
    parser.add_argument("--only", help="only the kinds whose name contains this (no deletions)")
    parser.add_argument(
        "--sqlite", action=argparse.BooleanOptionalAction, default=True, help="time SQLite too"
    )
    options = parser.parse_args()
    asyncio.run(
        main(options.postgres, options.rounds, options.passes, options.only, options.sqlite)
    )

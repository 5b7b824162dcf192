"""Fan-out over a cluster: the clients of each room spread over 2 nodes vs 1 node.

``python -m bench.cluster`` runs the same load against three deployments and
prints one line each:

* ``sqlite-1``  — one process, the SQLite default (no bus);
* ``pg-1``      — one node on PostgreSQL + Redis (``--bus``);
* ``pg-2``      — two nodes on PostgreSQL + Redis, each room's clients split
  between them, so every message crosses the bus to reach half its readers.

Load: ``rooms`` rooms of ``clients`` members; ``senders`` members per room
send stamped messages at ``rate`` messages a second in total for ``seconds``.
Reported: deliveries a second, p50/p99 latency from send to delivery, and
CPU per delivery summed over every server process (utime + stime from
/proc; Redis and PostgreSQL are not counted). PostgreSQL and Redis come from
``CLUBROOM_TEST_POSTGRES`` / ``CLUBROOM_TEST_REDIS``; each run uses a fresh
database and its own channel prefix. The load generator runs in this process,
on the same cores, so absolute numbers are lower than the servers could do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.servers import ServerProcess, _launch, free_port, wait_listening
from bench.stats import Latency
from bench.wsclient import FrameClient, Recorder, connect, stamped_text

PASSWORD = "correct-horse-1!"
COMMON = [
    "--host", "127.0.0.1", "--grace", "5", "--rate-limit", "0", "--room-rate-limit", "0",
    "--max-connections-per-address", "0", "--argon2-profile", "cheapest",
    "--synchronous", "NORMAL", "--log-level", "WARNING",
    "--login-failures-per-address", "0", "--registrations-per-address", "0",
    "--registrations-total", "0", "--max-handshakes-per-address", "0",
]  # fmt: skip


@dataclass
class Result:
    name: str
    delivered: int
    expected: int
    per_s: float
    latency: Latency
    cpu_us_per_delivery: float
    generator_busy: float  # share of one core the load generator (this process) used

    def line(self) -> str:
        p50 = f"{self.latency.p50_ms:.1f}" if self.latency.p50_ms is not None else "-"
        p99 = f"{self.latency.p99_ms:.1f}" if self.latency.p99_ms is not None else "-"
        return (
            f"{self.name:9} {self.per_s:9.0f}/s  p50 {p50:>6} ms  p99 {p99:>6} ms  "
            f"{self.cpu_us_per_delivery:6.1f} µs CPU/delivery  "
            f"generator {self.generator_busy:4.0%} of a core  "
            f"({self.delivered}/{self.expected} delivered)"
        )


@asynccontextmanager
async def fresh_postgres(admin_url: str) -> AsyncIterator[str]:
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


def start_nodes(workdir: Path, db: str, count: int, bus: str | None) -> list[ServerProcess]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    nodes = []
    for index in range(count):
        argv = [sys.executable, "-m", "clubroom_server", "serve", "--port", str(free_port())]
        argv += ["--db", db, *COMMON]
        if bus is not None:
            argv += ["--bus", bus, "--bus-prefix", prefix, "--node-id", f"bench{index}"]
        log = workdir / f"node{index}.log"
        nodes.append(wait_listening(_launch(f"node{index}", argv, log, {}, None)))
    return nodes


async def call(client: FrameClient, frame: dict[str, object]) -> dict[str, object]:
    reply = await asyncio.wait_for(client.request(frame), 30)
    if reply.get("type") == "error":
        raise RuntimeError(f"{frame['type']} failed: {reply}")
    return reply


async def populate(
    nodes: list[ServerProcess], rooms: int, clients: int, recorder: Recorder
) -> list[list[FrameClient]]:
    """Every room's members, member ``i`` on node ``i % len(nodes)``; all joined."""
    members: list[list[FrameClient]] = []
    for room in range(rooms):
        group = []
        for i in range(clients):
            node = nodes[i % len(nodes)]
            client = await connect("127.0.0.1", node.port, "/", recorder, subprotocol="clubroom.v1")
            name = f"r{room}u{i}x{uuid.uuid4().hex[:6]}"
            await call(client, {"type": "register", "username": name, "password": PASSWORD})
            kind = "create_room" if i == 0 else "join_room"
            await call(client, {"type": kind, "room": f"bench{room}"})
            group.append(client)
        members.append(group)
    return members


async def drive(members: list[list[FrameClient]], senders: int, rate: float, seconds: float) -> int:
    """Send stamped messages at ``rate`` a second in total, round robin over the senders."""
    pairs = [(f"bench{r}", group[s]) for r, group in enumerate(members) for s in range(senders)]
    interval = 1 / rate
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            room, client = pairs[sent % len(pairs)]
            frame = {"type": "send", "room": room, "text": stamped_text(time.monotonic_ns())}
            client.request(frame)
            sent += 1
        await asyncio.sleep(interval / 2)
    return sent


async def run_one(
    name: str, db: str, count: int, bus: str | None, args: argparse.Namespace, workdir: Path
) -> Result:
    nodes = start_nodes(workdir, db, count, bus)
    try:
        recorder = Recorder()
        members = await populate(nodes, args.rooms, args.clients, recorder)
        await asyncio.sleep(0.5)
        cpu_before = sum(node.cpu_seconds() for node in nodes)
        # The generator receives every delivery itself: when it is near 100 % of a
        # core, the latencies measure its own backlog more than the servers'.
        own_before, wall_before = time.process_time(), time.monotonic()
        recorder.reset(time.monotonic_ns())
        sent = await drive(members, args.senders, args.rate, args.seconds)
        expected = sent * args.clients
        deadline = time.monotonic() + 10
        while recorder.count < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - counts, no event
            await asyncio.sleep(0.05)
        cpu = sum(node.cpu_seconds() for node in nodes) - cpu_before
        busy = (time.process_time() - own_before) / (time.monotonic() - wall_before)
        elapsed = (recorder.last_ns - recorder.since_ns) / 1e9 or args.seconds
        for group in members:
            for client in group:
                client.abort()
        return Result(
            name,
            recorder.count,
            expected,
            recorder.count / elapsed,
            Latency.of(recorder.latencies),
            cpu * 1e6 / max(1, recorder.count),
            busy,
        )
    finally:
        for node in nodes:
            node.stop()


async def main_async(args: argparse.Namespace) -> None:
    postgres = os.environ.get("CLUBROOM_TEST_POSTGRES")
    redis = os.environ.get("CLUBROOM_TEST_REDIS")
    if not postgres or not redis:
        raise SystemExit("set CLUBROOM_TEST_POSTGRES and CLUBROOM_TEST_REDIS")
    with tempfile.TemporaryDirectory(prefix="clubroom-bench-") as folder:
        workdir = Path(folder)
        print(
            f"{args.rooms} rooms x {args.clients} clients, {args.senders} senders a room, "
            f"{args.rate:.0f} messages/s for {args.seconds:.0f} s"
        )
        result = await run_one("sqlite-1", str(workdir / "c.db"), 1, None, args, workdir)
        print(result.line(), flush=True)
        for count in (1, 2):
            async with fresh_postgres(postgres) as db:
                result = await run_one(f"pg-{count}", db, count, redis, args, workdir)
            print(result.line(), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second in total")
    parser.add_argument("--seconds", type=float, default=8.0)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

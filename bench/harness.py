"""What every scenario needs: servers, connections, authentication, rooms, chat load.

A scenario is written in terms of *groups* — the same rooms and members set
up once on Clubroom and once on the ceiling server — so the load it offers is
identical on both, and it alternates runs between them to cancel drift.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.pool import Pending, WorkerPool
from bench.servers import (
    REPO_ROOT,
    ServerProcess,
    all_cpus,
    busy_seconds,
    free_port,
    fresh_database,
    named_cpu_seconds,
    softirq_seconds,
    split_cpus,
    start_ceiling,
    start_clubroom,
    wait_listening,
)
from bench.stats import Latency, Measurement, merge_arrays
from bench.worker import ClientSpec

SUBPROTOCOL = "clubroom.v1"
PASSWORD = "bench-pass-1!"
CLUBROOM, CEILING = "clubroom", "ceiling"


class SetupError(RuntimeError):
    """Connections or requests that a scenario's set-up needs did not succeed."""


@dataclass(frozen=True)
class Variant:
    """One server under test: Clubroom (from some checkout, with some flags) or the ceiling.

    Two variants make a comparison: Clubroom vs the ceiling (S1), Clubroom with
    ``/metrics`` on vs off, or this checkout vs another one (``--baseline-root``).
    """

    label: str
    kind: str = CLUBROOM  # or CEILING
    root: str | None = None  # a checkout whose clubroom_server runs (None: this one)
    metrics: bool = False  # serve /metrics on a free loopback port (scraped while up)
    extra_args: tuple[str, ...] = ()


@dataclass
class ChatGroup:
    """The rooms and members of one scenario on one server, and who sends."""

    target: str
    server: ServerProcess
    rooms: dict[str, list[int]]
    senders: list[tuple[int, str]] = field(default_factory=list)
    accounts: dict[int, tuple[str, str]] = field(default_factory=dict)  # cid -> (user, token)

    @property
    def members(self) -> list[int]:
        return [cid for cids in self.rooms.values() for cid in cids]


@dataclass
class ChatRun:
    """Raw outcome of offering chat load to one group for a while."""

    send_rate: float
    duration: float
    since_ns: int
    delivered: int
    expected: int
    latencies: Any
    stamps: Any
    last_ns: int
    cpu_seconds: float
    rss_bytes: int
    loadgen_cpu: float
    late: int
    errors: int
    closed: int
    side_results: list[Any] = field(default_factory=list)
    softirq_seconds: float | None = None
    worker_max_ms: list[float] = field(default_factory=list)
    sent: int = 0
    behind_max_ms: float = 0.0
    behind_sends: int = 0
    worker_cpu_shares: list[float] = field(default_factory=list)
    loadgen_cores: int = 1
    others_on_server_cpus: float | None = None  # share of the server's CPUs others used
    server_wait_share: float = 0.0  # share of the step its threads waited for a CPU

    def crowded(self) -> str | None:
        """Other processes used the server's CPU and its threads waited for it: crowded out.

        Neither figure alone can tell. ``others_on_server_cpus`` is high on a
        saturated machine for a cheap server too (others take whatever it
        leaves idle), and ``server_wait_share`` counts the server's own
        threads waiting for each other (Clubroom's event loop and its SQLite
        writer share the pinned CPU: 50 % and more on a quiet machine) — a
        cost of its design, which must not buy it a second attempt.
        """
        others = self.others_on_server_cpus
        if others is None:  # no way to tell others' share; waiting alone decides
            crowded = self.server_wait_share >= 0.10
        else:
            crowded = others >= 0.05 and self.server_wait_share >= 0.10
        if crowded:
            return (
                f"the server waited for a CPU {self.server_wait_share:.0%} of the step "
                f"while other processes used {others or 0:.0%} of it"
            )
        return None

    def loadgen_limits(self) -> list[str]:
        """Why the load generator, not the server, may have been the limit (empty: it was not).

        Sends more than 20 ms behind their schedule on over 1 % of sends mean a
        worker's loop could not keep up; a worker at ≥ 90 % of a core (each is
        one thread), or all of them at ≥ 90 % of their CPUs, means it was about to.
        """
        reasons: list[str] = []
        if self.sent and self.behind_sends > 0.01 * self.sent:
            reasons.append(
                f"{self.behind_sends / self.sent:.0%} of sends > 20 ms behind schedule "
                f"(worst {self.behind_max_ms:.0f} ms)"
            )
        busiest = max(self.worker_cpu_shares, default=0.0)
        if busiest >= 0.9:
            reasons.append(f"a worker used {busiest:.0%} of a core")
        elif sum(self.worker_cpu_shares) >= 0.9 * self.loadgen_cores:
            reasons.append(
                f"workers used {sum(self.worker_cpu_shares):.0%} of {self.loadgen_cores} CPU(s)"
            )
        return reasons

    def measurement(self, target: str, window: tuple[int, int] | None = None) -> Measurement:
        """Reduce the run to table figures; ``window`` keeps only stamps inside it."""
        latencies = self.latencies
        if window is not None:
            low, high = window
            latencies = [
                lat for lat, stamp in zip(self.latencies, self.stamps, strict=True)
                if low <= stamp <= high
            ]  # fmt: skip
        elapsed = max(self.duration, (self.last_ns - self.since_ns) / 1e9)
        per_delivery = 1e6 / self.delivered if self.delivered else None
        return Measurement(
            target=target,
            delivered=self.delivered,
            expected=self.expected,
            deliveries_per_s=self.delivered / elapsed if elapsed > 0 else None,
            offered_per_s=self.expected / self.duration if self.duration else None,
            latency=Latency.of(latencies),
            cpu_us_per_delivery=self.cpu_seconds / self.delivered * 1e6 if self.delivered else None,
            cpu_seconds=self.cpu_seconds,
            rss_mib=self.rss_bytes / 2**20,
            loadgen_cpu_share=self.loadgen_cpu / elapsed if elapsed > 0 else None,
            notes={
                "send_rate": self.send_rate,
                "late": self.late,
                "errors": self.errors,
                "closed_connections": self.closed,
                "softirq_us_per_delivery": (
                    self.softirq_seconds * per_delivery
                    if self.softirq_seconds is not None and per_delivery else None
                ),
                "worker_max_latency_ms": self.worker_max_ms,
                "behind_max_ms": self.behind_max_ms,
                "behind_sends": self.behind_sends,
                "worker_cpu_shares": self.worker_cpu_shares,
                "loadgen_limits": self.loadgen_limits(),
                "others_on_server_cpus": self.others_on_server_cpus,
                "server_wait_share": self.server_wait_share,
                "crowded": self.crowded(),
                **self._slow(latencies if window is None else None),
            },
        )  # fmt: skip

    def _slow(self, latencies: Any) -> dict[str, Any]:
        """How many deliveries took over 100 ms, and when they were sent (s into the run).

        Tells one stall of the whole machine (a short span) from a server that
        fell behind (a span running to the end).
        """
        if latencies is None:
            return {}
        limit = 100_000_000
        slow = [stamp for lat, stamp in zip(latencies, self.stamps, strict=True) if lat > limit]
        if not slow:
            return {"slow_deliveries": 0}
        return {
            "slow_deliveries": len(slow),
            "slow_sent_between_s": [
                round((min(slow) - self.since_ns) / 1e9, 3),
                round((max(slow) - self.since_ns) / 1e9, 3),
            ],
        }


class Harness:
    """Owns the worker pool and a scratch directory; hands out client ids."""

    def __init__(
        self, config: BenchConfig, log: Callable[[str], None] | None = None, keep: bool = False
    ) -> None:
        self.config = config
        split = split_cpus() if config.pin else None
        self.server_cpus: set[int] | None = split[0] if split else None
        self.loadgen_cpus: set[int] | None = split[1] if split else None
        if self.loadgen_cpus:
            os.sched_setaffinity(0, self.loadgen_cpus)
        self.pool = WorkerPool(config.workers, self.loadgen_cpus)
        self.workdir = Path(tempfile.mkdtemp(prefix="clubroom-bench-"))
        self.keep = keep
        self._next_cid = 0
        self._starts = 0
        self.postgres: str | None = None  # set: Clubroom runs on a fresh PostgreSQL database
        # Unpinned runs: process names (``comm``) that work for the deployment under test
        # (PostgreSQL, Redis): their CPU is not "other processes crowding the server".
        self.support_processes: frozenset[str] = frozenset()
        self._databases = ExitStack()  # PostgreSQL databases to drop at the end
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))

    def log(self, text: str) -> None:
        self._log(text)

    def close(self) -> None:
        self.pool.close()
        self._databases.close()
        if self.keep:
            self.log(f"server logs and databases kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def new_cids(self, count: int) -> list[int]:
        """Fresh client ids; consecutive ids land on different workers."""
        first = self._next_cid
        self._next_cid += count
        return list(range(first, first + count))

    # -- servers ---------------------------------------------------------------

    def _start_clubroom(
        self, db_path: Path, argon2_profile: str | None, variant: Variant | None = None
    ) -> ServerProcess:
        root_text = (variant.root if variant else None) or self.config.server_root
        root = Path(root_text) if root_text else REPO_ROOT
        db = self._databases.enter_context(fresh_database(self.postgres)) if self.postgres else None
        # "auto" is every server's default, and older checkouts (versus) lack the option
        loop = self.config.clubroom_loop
        extra = [] if loop == "auto" else ["--event-loop", loop]
        extra += list(variant.extra_args) if variant else []
        if variant and variant.metrics:
            extra += ["--metrics-address", f"127.0.0.1:{free_port()}"]
        server = start_clubroom(
            self.workdir,
            db or db_path,
            argon2_profile=argon2_profile,
            cpus=self.server_cpus,
            root=root,
            extra_args=extra,
            db_pool_size=self.config.db_pool_size,
        )
        if variant and variant.metrics:
            server.extra["metrics_address"] = extra[-1]
        return server

    def start_variant(
        self, variant: Variant, db_path: Path, argon2_profile: str | None = "cheapest"
    ) -> ServerProcess:
        """Launch one variant (not yet waited for)."""
        if variant.kind == CEILING:
            return start_ceiling(self.workdir, self.config.ceiling_loop, self.server_cpus)
        return self._start_clubroom(db_path, argon2_profile, variant)

    @contextmanager
    def variants(
        self,
        name: str,
        variants: Sequence[Variant],
        *,
        argon2_profile: str | None = "cheapest",
        db_path: Path | None = None,
    ) -> Iterator[list[ServerProcess]]:
        """Fresh servers for one scenario, one per variant (each Clubroom its own database)."""
        started: list[ServerProcess] = []
        try:
            for index, variant in enumerate(variants):
                self._starts += 1
                db = db_path if db_path and index == 0 else None
                db = db or self.workdir / f"{name}-{self._starts}.db"
                started.append(self.start_variant(variant, db, argon2_profile))
            for server in started:
                wait_listening(server)
            with MetricsScraper(started):
                yield started
        finally:
            self.pool.call_all("close")
            for server in started:
                server.stop()

    @contextmanager
    def servers(
        self, name: str, *, argon2_profile: str | None = "cheapest", db_path: Path | None = None
    ) -> Iterator[tuple[ServerProcess, ServerProcess]]:
        """A fresh Clubroom (temp database) and a fresh ceiling server, for one scenario."""
        pair = (Variant(CLUBROOM), Variant(CEILING, kind=CEILING))
        with self.variants(name, pair, argon2_profile=argon2_profile, db_path=db_path) as started:
            yield started[0], started[1]

    @contextmanager
    def clubroom_only(
        self, db_path: Path, *, argon2_profile: str | None = "cheapest"
    ) -> Iterator[ServerProcess]:
        """A Clubroom server alone (used to prepare a database)."""
        server = self._start_clubroom(db_path, argon2_profile)
        try:
            yield wait_listening(server)
        finally:
            self.pool.call_all("close")
            server.stop()

    # -- connections -----------------------------------------------------------

    def open(
        self, specs: list[ClientSpec], *, concurrency: int = 200, measured: bool = True
    ) -> None:
        """Open every connection or raise ``SetupError``."""
        groups = self.pool.split(specs)
        results = self.pool.call_each(
            "open",
            [
                {"specs": group, "concurrency": max(1, concurrency // self.pool.size),
                 "measured": measured}
                for group in groups
            ],
        )  # fmt: skip
        failed = len(specs) - sum(result["opened"] for result in results)
        if failed:
            reasons = [reason for result in results for reason in result["failures"]]
            raise SetupError(f"{failed} of {len(specs)} connections failed: {reasons}")

    def open_clubroom(self, server: ServerProcess, cids: list[int], **kwargs: Any) -> None:
        self.open(
            [ClientSpec(cid, server.port, "/", SUBPROTOCOL, json_mode=True) for cid in cids],
            **kwargs,
        )

    def open_ceiling(self, server: ServerProcess, paths: dict[int, str], **kwargs: Any) -> None:
        self.open(
            [
                ClientSpec(cid, server.port, path, None, json_mode=False)
                for cid, path in paths.items()
            ],
            **kwargs,
        )

    def drop(self, cids: list[int]) -> None:
        """Reset these connections (TCP RST) and forget them."""
        self.pool.call_each("close", [{"cids": group} for group in self.pool.split(cids, int)])

    def start_requests(
        self,
        items: Sequence[tuple[int, Mapping[str, Any] | None]],
        *,
        concurrency: int = 100,
        start_at_ns: int | None = None,
        timeout: float = 120.0,
    ) -> list[Pending]:
        """Send requests from the workers owning each client; don't wait."""
        per_worker = max(1, concurrency // self.pool.size)
        return [
            self.pool.start(index, "request", items=group, concurrency=per_worker,
                            wait_seconds=timeout, start_at_ns=start_at_ns)
            for index, group in enumerate(self.pool.split(items))
            if group
        ]  # fmt: skip

    def requests(
        self,
        items: Sequence[tuple[int, Mapping[str, Any] | None]],
        *,
        expect: str | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Send requests and return the replies; with ``expect``, insist on that type."""
        replies = [
            reply for pending in self.start_requests(items, **kwargs) for reply in pending.result()
        ]
        if expect is not None:
            wrong = [reply for reply in replies if reply.get("type") != expect]
            if wrong:
                raise SetupError(f"{len(wrong)} replies were not {expect!r}, e.g. {wrong[0]}")
        return replies

    # -- Clubroom set-up -------------------------------------------------------

    def register(self, cids: list[int], prefix: str) -> dict[int, tuple[str, str]]:
        """Register one account per connection; return ``cid -> (username, token)``."""
        frames = [
            (cid, {"type": "register", "username": f"{prefix}{cid}", "password": PASSWORD})
            for cid in cids
        ]
        replies = self.requests(frames, expect="welcome", concurrency=64)
        return {reply["cid"]: (reply["username"], reply["token"]) for reply in replies}

    def resume(self, tokens: dict[int, str], *, concurrency: int = 200) -> None:
        """Authenticate connections with existing tokens."""
        frames = [(cid, {"type": "resume", "token": token}) for cid, token in tokens.items()]
        self.requests(frames, expect="welcome", concurrency=concurrency)

    def enter_rooms(self, rooms: dict[str, list[int]]) -> None:
        """The first member of each room creates it, then the others join."""
        creators = [
            (cids[0], {"type": "create_room", "room": room}) for room, cids in rooms.items()
        ]
        self.requests(creators, expect="joined")
        joiners = [
            (cid, {"type": "join_room", "room": room})
            for room, cids in rooms.items()
            for cid in cids[1:]
        ]
        self.requests(joiners, expect="joined", concurrency=64)

    def chat_groups(
        self,
        clubroom: ServerProcess,
        ceiling: ServerProcess,
        rooms: int,
        clients: int,
        senders: int,
        prefix: str,
        tokens: list[str] | None = None,
    ) -> tuple[ChatGroup, ChatGroup]:
        """The same rooms on Clubroom and the ceiling, all members connected, joined and ready.

        With ``tokens`` (one per member) Clubroom members resume instead of
        registering, so accounts made earlier (and their hash cost) are reused.
        """
        club = self.clubroom_group(CLUBROOM, clubroom, rooms, clients, senders, prefix, tokens)
        ceil = self.ceiling_group(CEILING, ceiling, rooms, clients, senders, prefix)
        time.sleep(0.2)  # let member_joined events settle before anything is measured
        return club, ceil

    def variant_groups(
        self,
        variants: Sequence[Variant],
        servers: Sequence[ServerProcess],
        rooms: int,
        clients: int,
        senders: int,
        prefix: str,
    ) -> tuple[ChatGroup, ...]:
        """The same rooms on every variant's server, members connected and ready."""
        groups = tuple(
            self.ceiling_group(variant.label, server, rooms, clients, senders, f"{prefix}{index}")
            if variant.kind == CEILING
            else self.clubroom_group(
                variant.label, server, rooms, clients, senders, f"{prefix}{index}"
            )
            for index, (variant, server) in enumerate(zip(variants, servers, strict=True))
        )
        time.sleep(0.2)
        return groups

    def clubroom_group(
        self,
        label: str,
        server: ServerProcess,
        rooms: int,
        clients: int,
        senders: int,
        prefix: str,
        tokens: list[str] | None = None,
    ) -> ChatGroup:
        """Rooms on one Clubroom server: members registered (or resumed) and joined."""
        club_rooms = {f"{prefix} room {r}": self.new_cids(clients) for r in range(rooms)}
        members = [cid for cids in club_rooms.values() for cid in cids]
        self.open_clubroom(server, members)
        if tokens is None:
            accounts = self.register(members, f"{prefix}u")
        else:
            accounts = {cid: ("", token) for cid, token in zip(members, tokens, strict=True)}
            self.resume({cid: token for cid, (_, token) in accounts.items()})
        self.enter_rooms(club_rooms)
        return ChatGroup(
            label, server, club_rooms, _pick_senders(club_rooms, senders), dict(accounts)
        )

    def ceiling_group(
        self, label: str, server: ServerProcess, rooms: int, clients: int, senders: int, prefix: str
    ) -> ChatGroup:
        """Rooms on the ceiling: one request path per room."""
        ceil_rooms = {f"/{prefix}-room-{r}": self.new_cids(clients) for r in range(rooms)}
        self.open_ceiling(server, {cid: path for path, cids in ceil_rooms.items() for cid in cids})
        return ChatGroup(label, server, ceil_rooms, _pick_senders(ceil_rooms, senders))

    # -- load ------------------------------------------------------------------

    def run_chat(
        self,
        group: ChatGroup,
        send_rate: float,
        duration: float,
        side: Callable[[int], list[Pending]] | None = None,
        side_limit: float = 120.0,
        warmup: float = 0.0,
    ) -> ChatRun:
        """Offer ``send_rate`` messages/s for ``duration`` s and collect every delivery.

        The first ``warmup`` seconds run the same load unmeasured (their
        messages, CPU and latencies are not counted), so a step is judged on
        its steady state, not on the jump from the previous rate.

        ``side`` may start other commands (a login storm) once the load is on;
        the load then goes on until they are done (at least ``duration``, at
        most ``side_limit`` s), so the side work happens under load from start
        to end. Their results come back in ``side_results``.
        """
        pool = self.pool
        senders = pool.split(group.senders)
        total = max(1, len(group.senders))
        since = time.monotonic_ns() + int(warmup * 1e9) + 50_000_000  # workers start in time
        pool.call_all("arm", since_ns=since)
        runs = pool.start_each(
            "run",
            [{"senders": mine, "rate": send_rate * len(mine) / total,
              "duration": (side_limit if side else duration) + warmup + 0.05,
              "measure_from_ns": since} for mine in senders],
        )  # fmt: skip
        time.sleep(max(0.0, (since - time.monotonic_ns()) / 1e9))
        server_cpu = group.server.cpu_seconds()
        server_wait = group.server.wait_seconds()
        watched = self._watched_cpus()
        softirq = softirq_seconds(watched)
        busy = busy_seconds(watched)
        support = self._support_cpu()
        side_results: list[Any] = []
        if side:
            side_results = [pending.result() for pending in side(since)]
            time.sleep(max(0.5, duration - (time.monotonic_ns() - since) / 1e9))
            pool.call_all("halt")
        sends: Counter[str] = Counter()
        seconds = 0.0
        behind_max, behind_sends = 0.0, 0
        for pending in runs:
            result = pending.result()
            sends.update(result["sends"])
            seconds = max(seconds, result["seconds"])
            behind_max = max(behind_max, result["behind_max_ms"])
            behind_sends += result["behind_sends"]
        expected = self._expected(group, sends)
        collected = pool.call_each(
            "collect",
            [{"expected": want, "wait_seconds": self.config.drain_timeout} for want in expected],
        )
        softirq_after = softirq_seconds(watched)
        busy_after = busy_seconds(watched)
        support_used = self._support_cpu() - support
        server_cpu_used = group.server.cpu_seconds() - server_cpu
        waited = group.server.wait_seconds() - server_wait
        elapsed = max(seconds, 1e-9)
        wall = max(1e-9, (time.monotonic_ns() - since) / 1e9)
        others = None
        if busy is not None and busy_after is not None and softirq is not None:
            irq = (softirq_after or 0) - softirq
            cores = len(watched or ()) or 1
            used = server_cpu_used + irq + support_used
            others = max(0.0, busy_after - busy - used) / wall / cores
        return ChatRun(
            send_rate=send_rate,
            duration=seconds,
            since_ns=since,
            delivered=sum(part["count"] for part in collected),
            expected=sum(expected),
            latencies=merge_arrays(part["latencies"] for part in collected),
            stamps=merge_arrays(part["stamps"] for part in collected),
            last_ns=max(part["last_ns"] for part in collected),
            cpu_seconds=server_cpu_used,
            rss_bytes=group.server.rss_bytes(),
            loadgen_cpu=sum(part["cpu"] for part in collected),
            late=sum(part["late"] for part in collected),
            errors=sum(part["errors"] for part in collected),
            closed=sum(part["closed"] for part in collected),
            side_results=side_results,
            softirq_seconds=(
                softirq_after - softirq if softirq is not None and softirq_after is not None
                else None
            ),
            worker_max_ms=[
                round(max(merge_arrays([part["latencies"]]), default=0) / 1e6, 2)
                for part in collected
            ],
            sent=sum(sends.values()),
            behind_max_ms=behind_max,
            behind_sends=behind_sends,
            worker_cpu_shares=[part["cpu"] / elapsed for part in collected],
            loadgen_cores=len(self.loadgen_cpus or ()) or (os.cpu_count() or 1),
            others_on_server_cpus=others,
            server_wait_share=waited / wall,
        )  # fmt: skip

    def _watched_cpus(self) -> set[int] | None:
        """The CPUs whose other users would crowd the server: its own when pinned; when not
        (the cluster), every CPU, if the deployment's support processes are known."""
        if self.server_cpus:
            return self.server_cpus
        return all_cpus() if self.support_processes else None

    def _support_cpu(self) -> float:
        """CPU used so far by what serves the deployment besides its servers (unpinned only):
        the database and bus servers, the load generator and this coordinator."""
        if self.server_cpus or not self.support_processes:
            return 0.0
        return named_cpu_seconds(self.support_processes, [os.getpid(), *self.pool.pids])

    def _expected(self, group: ChatGroup, sends: Counter[str]) -> list[int]:
        """Deliveries each worker should see: sends to a room × its members there."""
        expected = [0] * self.pool.size
        for room, cids in group.rooms.items():
            for cid in cids:
                expected[self.pool.owner(cid)] += sends.get(room, 0)
        return expected

    def wait_idle(self, server: ServerProcess, timeout: float = 30.0) -> None:
        """Wait until the server stops burning CPU (a backlog from an overload drained)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = server.cpu_seconds()
            time.sleep(0.25)
            if server.cpu_seconds() - before <= 0.02:
                return


class MetricsScraper:
    """Scrapes every server that serves ``/metrics``, every 5 s, while a scenario runs.

    A Prometheus server scrapes every 15 s by default; scraping three times as
    often makes the cost of metrics, if anything, overstated.
    """

    def __init__(self, servers: Sequence[ServerProcess], interval: float = 5.0) -> None:
        self.addresses = [
            server.extra["metrics_address"]
            for server in servers
            if "metrics_address" in server.extra
        ]
        self.interval = interval
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MetricsScraper:
        if self.addresses:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for address in self.addresses:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as reply:
                        reply.read()
                    self.scrapes += 1


def _pick_senders(rooms: dict[str, list[int]], per_room: int) -> list[tuple[int, str]]:
    """The first ``per_room`` members of each room send (ids alternate workers)."""
    return [(cid, room) for room, cids in rooms.items() for cid in cids[:per_room]]

"""The long run (opt-in): moderate chat with joins and leaves; is the server's memory flat?

``python -m bench --only longrun --minutes 30``. Clubroom alone, S1's rooms
(4 × 50 members, 10 senders each) at a moderate rate, in cycles: chat for
``longrun_cycle_seconds`` (every delivery checked), then a round of churn —

* members move: some leave their room and join the next one;
* members reconnect: their connections are reset, new ones ``resume`` with
  the same token and rejoin;
* newcomers register, create a room of their own, join a chat room, leave
  both and disconnect for good (new per-user and per-room state every cycle).

``--no-chat`` runs the churn alone (a round every ``--cycle-seconds``, nothing
sent), ``--no-churn`` the chat alone: growth in the first is per-user or
per-room state that is never dropped, growth in the second the message path
(caches that fill as the database grows, the allocator). See the README, "The
long run (leaks)", for what bounds each.

The server's RSS and its open file descriptors are sampled every
``--sample-seconds`` (default a minute). Leaks in per-room or per-user tables
show up as growth that does not stop; allocator warm-up shows up as early
growth that does. So the verdict looks at the last two thirds of the run:
the least-squares slope there, times that span, is the *growth*; it is
*flat* if the growth is within the *allowance* — three times the residual
standard deviation of the samples around that line (the noise), and never
less than 1 MiB of RSS or 2 descriptors (a rounding of the kernel's
accounting, a connection mid-close). Fewer than three samples in that part:
no verdict.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.harness import CLUBROOM, ChatGroup, ChatRun, Harness, Variant
from bench.servers import ServerProcess
from bench.stats import Latency, Measurement, ScenarioResult

RSS_FLOOR_MIB = 1.0
FD_FLOOR = 2.0


def open_descriptors(pid: int) -> int:
    """How many file descriptors the process has open (/proc/PID/fd)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class Flatness:
    """The verdict on one sampled quantity over the last two thirds of the run."""

    growth: float | None  # slope × span of the judged part
    noise: float | None  # residual standard deviation around the fitted line
    allowance: float | None
    samples: int

    @property
    def growth_vs_allowance(self) -> float | None:
        if self.growth is None or not self.allowance:
            return None
        return max(0.0, self.growth) / self.allowance

    @property
    def flat(self) -> bool | None:
        ratio = self.growth_vs_allowance
        return None if ratio is None else ratio <= 1.0


def flatness(times: list[float], values: list[float], floor: float) -> Flatness:
    """Judge ``values`` sampled at ``times`` over the last 2/3 of the run (see module doc)."""
    if not times:
        return Flatness(None, None, None, 0)
    start = times[0] + (times[-1] - times[0]) / 3
    part = [(t, v) for t, v in zip(times, values, strict=True) if t >= start]
    if len(part) < 3:
        return Flatness(None, None, None, len(part))
    xs, ys = [t for t, _ in part], [v for _, v in part]
    slope, intercept = statistics.linear_regression(xs, ys)
    residuals = [y - (slope * x + intercept) for x, y in part]
    noise = statistics.pstdev(residuals)
    growth = slope * (xs[-1] - xs[0])
    return Flatness(growth, noise, max(3 * noise, floor), len(part))


@dataclass
class Churn:
    """Joins, leaves, reconnects and newcomers between chat cycles, on one group."""

    h: Harness
    group: ChatGroup
    per_cycle: int
    rounds: int = 0
    moves: int = 0
    reconnects: int = 0
    newcomers: int = 0
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def _quiet_members(self) -> list[tuple[str, int]]:
        senders = {cid for cid, _ in self.group.senders}
        return [
            (room, cid)
            for room, cids in self.group.rooms.items()
            for cid in cids
            if cid not in senders
        ]

    def cycle(self) -> None:
        """One round: move some members, reconnect some, bring newcomers in and out."""
        turn = next(self._counter)
        quiet = self._quiet_members()
        chosen = [quiet[(turn * 7 + i * 13) % len(quiet)] for i in range(2 * self.per_cycle)]
        chosen = list(dict.fromkeys(chosen))
        self._move(chosen[: len(chosen) // 2])
        self._reconnect(chosen[len(chosen) // 2 :])
        self._newcomers(turn)
        self.rounds += 1

    def _move(self, members: list[tuple[str, int]]) -> None:
        rooms = list(self.group.rooms)
        leaves = [(cid, {"type": "leave_room", "room": room}) for room, cid in members]
        self.h.requests(leaves, expect="ok")
        joins = []
        for room, cid in members:
            target = rooms[(rooms.index(room) + 1) % len(rooms)]
            self.group.rooms[room].remove(cid)
            self.group.rooms[target].append(cid)
            joins.append((cid, {"type": "join_room", "room": target}))
        self.h.requests(joins, expect="joined")
        self.moves += len(members)

    def _reconnect(self, members: list[tuple[str, int]]) -> None:
        self.h.drop([cid for _, cid in members])
        fresh = self.h.new_cids(len(members))
        self.h.open_clubroom(self.group.server, fresh)
        tokens = {}
        for (room, old), new in zip(members, fresh, strict=True):
            tokens[new] = self.group.accounts.pop(old)
            cids = self.group.rooms[room]
            cids[cids.index(old)] = new
        self.h.resume({cid: token for cid, (_, token) in tokens.items()})
        self.group.accounts.update(tokens)
        room_of = {cid: room for room, cids in self.group.rooms.items() for cid in cids}
        self.h.requests(
            [(cid, {"type": "join_room", "room": room_of[cid]}) for cid in fresh], expect="joined"
        )
        self.reconnects += len(members)

    def _newcomers(self, turn: int) -> None:
        cids = self.h.new_cids(2)
        self.h.open_clubroom(self.group.server, cids)
        self.h.register(cids, f"lrnew{turn}-")
        rooms = list(self.group.rooms)
        own = [(cid, {"type": "create_room", "room": f"lr own {turn}-{cid}"}) for cid in cids]
        self.h.requests(own, expect="joined")
        join = [(cid, {"type": "join_room", "room": rooms[turn % len(rooms)]}) for cid in cids]
        self.h.requests(join, expect="joined")
        leave = [(cid, {"type": "leave_room", "room": frame["room"]}) for cid, frame in own + join]
        self.h.requests(leave, expect="ok")
        self.h.drop(cids)
        self.newcomers += len(cids)


def _sample(server: ServerProcess, started: float) -> dict[str, float]:
    return {
        "t": round(time.monotonic() - started, 1),
        "rss_mib": server.rss_bytes() / 2**20,
        "fds": open_descriptors(server.pid),
    }


def longrun(h: Harness) -> ScenarioResult:
    """Chat with churn for ``longrun_minutes``; RSS and descriptors sampled; flat or not."""
    cfg = h.config
    seconds = cfg.longrun_minutes * 60
    samples: list[dict[str, float]] = []
    runs: list[tuple[ChatRun, Latency]] = []
    with h.variants("longrun", [Variant(CLUBROOM)]) as [server]:
        group = h.clubroom_group(
            CLUBROOM, server, cfg.s1_rooms, cfg.s1_clients, cfg.s1_senders, "lr"
        )
        churn = Churn(h, group, per_cycle=max(1, cfg.s1_clients // 10))
        started = time.monotonic()
        samples.append(_sample(server, started))
        next_sample = cfg.longrun_sample_seconds
        while time.monotonic() - started < seconds:
            if cfg.longrun_chat:
                runs.append(_slim(h.run_chat(group, cfg.longrun_rate, cfg.longrun_cycle_seconds)))
            else:
                time.sleep(cfg.longrun_cycle_seconds)  # the churn's pace; nothing else runs
            if cfg.longrun_churn:
                churn.cycle()
            if time.monotonic() - started >= next_sample:
                samples.append(_sample(server, started))
                h.log(
                    f"  {samples[-1]['t']:>7.0f} s  RSS {samples[-1]['rss_mib']:.1f} MiB  "
                    f"fds {samples[-1]['fds']:.0f}  delivered "
                    f"{sum(r.delivered for r, _ in runs)}/{sum(r.expected for r, _ in runs)}"
                )
                next_sample += cfg.longrun_sample_seconds
        if samples[-1]["t"] < time.monotonic() - started - 1:
            samples.append(_sample(server, started))
        log_path = server.log_path
    return _result(cfg, samples, runs, churn, log_path)


def _title(cfg: BenchConfig) -> str:
    """What ran: chat with churn, churn only or chat only."""
    minutes, rate, every = cfg.longrun_minutes, cfg.longrun_rate, cfg.longrun_cycle_seconds
    if not cfg.longrun_chat:
        return f"Long run: {minutes:g} min of churn only (a round every {every:g} s, no chat)"
    churn = f"with churn every {every:g} s" if cfg.longrun_churn else "without churn"
    return f"Long run: {minutes:g} min of chat at {rate:g} sends/s {churn}"


def _slim(run: ChatRun) -> tuple[ChatRun, Latency]:
    """Keep a cycle's counts and percentiles, not its millions of latencies."""
    latency = Latency.of(run.latencies)
    run.latencies, run.stamps = [], []
    return run, latency


def _result(
    cfg: BenchConfig,
    samples: list[dict[str, float]],
    cycles: list[tuple[ChatRun, Latency]],
    churn: Churn,
    log_path: Path,
) -> ScenarioResult:
    times = [sample["t"] for sample in samples]
    rss = flatness(times, [sample["rss_mib"] for sample in samples], RSS_FLOOR_MIB)
    fds = flatness(times, [sample["fds"] for sample in samples], FD_FLOOR)
    runs = [run for run, _ in cycles]
    latencies = [latency for _, latency in cycles]
    p50s = [lat.p50_ms for lat in latencies if lat.p50_ms is not None]
    p99s = [lat.p99_ms for lat in latencies if lat.p99_ms is not None]
    maxes = [lat.max_ms for lat in latencies if lat.max_ms is not None]
    cpu = sum(run.cpu_seconds for run in runs)
    delivered = sum(run.delivered for run in runs)
    row = Measurement(
        target=CLUBROOM,
        delivered=delivered,
        expected=sum(run.expected for run in runs),
        deliveries_per_s=delivered / max(1e-9, sum(run.duration for run in runs)),
        latency=Latency(
            statistics.median(p50s) if p50s else None,
            max(p99s) if p99s else None,
            max(maxes) if maxes else None,
            sum(lat.samples for lat in latencies),
        ),
        cpu_us_per_delivery=cpu / delivered * 1e6 if delivered else None,
        rss_mib=samples[-1]["rss_mib"],
        notes={"closed_connections": max((run.closed for run in runs), default=0)},
    )

    def verdict(name: str, judged: Flatness, unit: str) -> str:
        if judged.flat is None:
            return f"{name}: too short to judge ({judged.samples} samples in the last 2/3)"
        word = "flat" if judged.flat else "GROWING"
        return (
            f"{name} {word}: {judged.growth:+.2f} {unit} over the last 2/3 "
            f"(allowance {judged.allowance:.2f})"
        )

    return ScenarioResult(
        key="longrun",
        title=_title(cfg),
        clubroom=row,
        ceiling=None,
        headline=f"{verdict('RSS', rss, 'MiB')}; {verdict('descriptors', fds, 'fds')}",
        ratios={
            "rss_growth_vs_allowance": rss.growth_vs_allowance,
            "fd_growth_vs_allowance": fds.growth_vs_allowance,
        },
        details={
            "samples": samples,
            "rss": rss.__dict__,
            "fds": fds.__dict__,
            "chat": cfg.longrun_chat,
            "churn": cfg.longrun_churn,
            "cycle_seconds": cfg.longrun_cycle_seconds,
            "cycles": churn.rounds if cfg.longrun_churn else len(runs),
            "moves": churn.moves,
            "reconnects": churn.reconnects,
            "newcomers": churn.newcomers,
            "server_log_bytes": log_path.stat().st_size if log_path.exists() else None,
        },
    )


def samples_text(result: ScenarioResult) -> str:
    """The samples as a small table (time, RSS, descriptors)."""
    lines = ["  t (s)   RSS MiB   fds"]
    lines += [
        f"  {sample['t']:>6.0f}  {sample['rss_mib']:>8.1f}  {sample['fds']:>4.0f}"
        for sample in result.details["samples"]
    ]
    details: dict[str, Any] = result.details
    lines.append(
        f"  {details['cycles']} cycles; {details['moves']} moves, {details['reconnects']} "
        f"reconnects, {details['newcomers']} newcomers"
    )
    return "\n".join(lines)

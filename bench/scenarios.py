"""Scenarios S2–S5 of the benchmark, each run against Clubroom and the ceiling (S1: fanout).

Each function starts fresh servers, sets the same rooms and members up on
both, alternates measured runs between them, and returns a
``ScenarioResult`` whose rows the report prints and whose ratios the targets
are checked against.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.fanout import spread, step_line
from bench.harness import CEILING, CLUBROOM, PASSWORD, ChatGroup, ChatRun, Harness
from bench.servers import ServerProcess
from bench.stats import Latency, Measurement, ScenarioResult, ratio


def _ms(value: float | None) -> str:
    return "   —   " if value is None else f"{value:7.1f}ms"


# --------------------------------------------------------------------------
# S2: one big room
# --------------------------------------------------------------------------


def combine_runs(runs: list[ChatRun]) -> ChatRun:
    """Several runs of the same load as one (for scenarios repeated in rounds)."""
    latencies, stamps = runs[0].latencies[:0], runs[0].stamps[:0]
    for run in runs:
        latencies.extend(run.latencies)
        stamps.extend(run.stamps)
    return ChatRun(
        send_rate=runs[0].send_rate,
        duration=sum(run.duration for run in runs),
        since_ns=0,
        delivered=sum(run.delivered for run in runs),
        expected=sum(run.expected for run in runs),
        latencies=latencies,
        stamps=stamps,
        last_ns=0,
        cpu_seconds=sum(run.cpu_seconds for run in runs),
        rss_bytes=max(run.rss_bytes for run in runs),
        loadgen_cpu=sum(run.loadgen_cpu for run in runs),
        late=sum(run.late for run in runs),
        errors=sum(run.errors for run in runs),
        closed=max(run.closed for run in runs),
    )


def alternate(
    h: Harness,
    groups: tuple[ChatGroup, ChatGroup],
    rounds: int,
    run: Callable[[ChatGroup], ChatRun],
) -> dict[str, list[ChatRun]]:
    """Run ``rounds`` times on each server, A B B A A B …, so drift cancels out."""
    runs: dict[str, list[ChatRun]] = {group.target: [] for group in groups}
    for index in range(rounds):
        for group in groups if index % 2 == 0 else groups[::-1]:
            result = run(group)
            runs[group.target].append(result)
            h.log(step_line(group.target, result.measurement(group.target)))
    return runs


def s2_big_room(h: Harness) -> ScenarioResult:
    """One room of 500 clients, 5 senders each at the default per-user rate (5/s)."""
    cfg = h.config
    rate = cfg.s2_senders * cfg.s2_rate_per_sender
    with h.servers("s2") as (clubroom, ceiling):
        groups = h.chat_groups(clubroom, ceiling, 1, cfg.s2_clients, cfg.s2_senders, "s2")
        runs = alternate(h, groups, cfg.s2_rounds, lambda g: h.run_chat(g, rate, cfg.s2_seconds))
    club = combine_runs(runs[CLUBROOM]).measurement(CLUBROOM)
    ceil = combine_runs(runs[CEILING]).measurement(CEILING)
    return ScenarioResult(
        key="s2",
        title=f"S2 1×{cfg.s2_clients} clients, {cfg.s2_senders} senders",
        clubroom=club,
        ceiling=ceil,
        headline=f"p99 {_ms(club.latency.p99_ms).strip()} at {club.offered_per_s or 0:,.0f}/s",
        ratios={
            "p99": ratio(club.latency.p99_ms, ceil.latency.p99_ms),
            "cpu_per_delivery": ratio(club.cpu_us_per_delivery, ceil.cpu_us_per_delivery),
        },
        details={
            "send_rate": rate,
            "rounds": cfg.s2_rounds,
            "p99_ms_per_round": {
                target: [run.measurement(target).latency.p99_ms for run in target_runs]
                for target, target_runs in runs.items()
            },
        },
    )


# --------------------------------------------------------------------------
# S3: idle connections
# --------------------------------------------------------------------------


def _idle_measurement(
    h: Harness,
    target: str,
    server: ServerProcess,
    open_all: Callable[[list[int]], None],
    count: int,
) -> Measurement:
    """Open ``count`` connections and charge the server's RSS growth to them."""
    settle = h.config.s3_settle_seconds
    time.sleep(settle / 2)
    rss_before, cpu_before = server.rss_bytes(), server.cpu_seconds()
    cids = h.new_cids(count)
    started = time.monotonic()
    open_all(cids)
    setup = time.monotonic() - started
    time.sleep(settle)  # let buffers and lazily built state settle
    rss_after, cpu = server.rss_bytes(), server.cpu_seconds() - cpu_before
    alive = sum(status["open"] for status in h.pool.call_all("status", cids=None))
    h.drop(cids)
    per_conn = (rss_after - rss_before) / count
    h.log(f"  {target:8} {count} idle connections: {per_conn / 1024:.1f} KiB each, "
          f"{alive} alive, set up in {setup:.1f} s")  # fmt: skip
    return Measurement(
        target=target,
        delivered=alive,
        expected=count,
        cpu_seconds=cpu,
        rss_mib=rss_after / 2**20,
        notes={
            "rss_before_mib": rss_before / 2**20,
            "rss_per_connection_kib": per_conn / 1024,
            "setup_seconds": setup,
            "cpu_us_per_connection": cpu / count * 1e6,
        },
    )


def s3_idle_connections(h: Harness) -> ScenarioResult:
    """10,000 idle authenticated connections (one login, the rest resume): RSS each."""
    cfg = h.config
    count = cfg.s3_connections
    with h.servers("s3") as (clubroom, ceiling):
        first = h.new_cids(1)
        h.open_clubroom(clubroom, first)
        [(username, token)] = h.register(first, "s3u").values()
        h.drop(first)

        def authenticate(cids: list[int]) -> None:
            h.open_clubroom(clubroom, cids, concurrency=cfg.s3_concurrency)
            login = {"type": "login", "username": username, "password": PASSWORD}
            h.requests([(cids[0], login)], expect="welcome")
            h.resume({cid: token for cid in cids[1:]}, concurrency=cfg.s3_concurrency)

        def connect_idle(cids: list[int]) -> None:
            h.open_ceiling(ceiling, dict.fromkeys(cids, "/s3-idle"),
                           concurrency=cfg.s3_concurrency)  # fmt: skip

        club = _idle_measurement(h, CLUBROOM, clubroom, authenticate, count)
        ceil = _idle_measurement(h, CEILING, ceiling, connect_idle, count)
    club_kib, ceil_kib = (m.notes["rss_per_connection_kib"] for m in (club, ceil))
    return ScenarioResult(
        key="s3",
        title=f"S3 {count:,} idle connections",
        clubroom=club,
        ceiling=ceil,
        headline=f"{club_kib:.1f} vs {ceil_kib:.1f} KiB per connection",
        ratios={"rss_per_connection": ratio(club_kib, ceil_kib)},
    )


# --------------------------------------------------------------------------
# S4: login storm
# --------------------------------------------------------------------------


def _prepare_accounts(h: Harness, db_path: Path, count: int, prefix: str) -> list[str]:
    """Register chat accounts cheaply (cheapest argon2) in ``db_path``; return tokens.

    The storm server then runs on the same file with the default profile; the
    chat clients resume with these tokens, so only the storm's logins hash.
    """
    with h.clubroom_only(db_path) as server:
        cids = h.new_cids(count)
        h.open_clubroom(server, cids)
        accounts = h.register(cids, prefix)
    return [token for _, token in accounts.values()]


def _storm_span(replies: list[dict[str, Any]]) -> tuple[int, int]:
    """From the first login sent to the last welcome received, in monotonic ns."""
    start = min(reply["sent_ns"] for reply in replies)
    end = max(reply["sent_ns"] + reply.get("elapsed_ns", 0) for reply in replies)
    return start, end


def s4_login_storm(h: Harness, peak_send_rate: float | None) -> ScenarioResult:
    """50 logins (default argon2 profile) while S1's load runs at half its sustained rate.

    Repeated (``s4_repetitions``): each repetition runs a storm on both
    servers, then a calm run of the same load on both, and compares chat p99
    over the same span — from the storm's start (or the same moment of the calm
    run) for as long as the longer storm lasted. Calm p99 is a few
    milliseconds, so one hiccup of a shared machine in either window moves the
    ratio by several times: the median over repetitions is judged, and the
    spread is reported beside it.
    """
    cfg = h.config
    rate = peak_send_rate / 2 if peak_send_rate else cfg.s4_fallback_rate
    db_path = h.workdir / "s4.db"
    tokens = _prepare_accounts(h, db_path, cfg.s1_rooms * cfg.s1_clients, "s4u")
    reps: list[dict[str, Any]] = []
    # the default hashing cost is what S4 is about; --quick only proves the machinery, and
    # on a busy machine hashes at SCHED_IDLE can take minutes
    profile = "cheapest" if cfg.quick else None
    with h.servers("s4", argon2_profile=profile, db_path=db_path) as (clubroom, ceiling):
        storm_users = h.new_cids(cfg.s4_logins)
        h.open_clubroom(clubroom, storm_users)
        names = [name for name, _ in h.register(storm_users, "s4storm").values()]
        h.drop(storm_users)
        groups = h.chat_groups(
            clubroom, ceiling, cfg.s1_rooms, cfg.s1_clients, cfg.s1_senders, "s4", tokens
        )
        for index in range(cfg.s4_repetitions):
            h.log(f"  repetition {index + 1} of {cfg.s4_repetitions}")
            order = groups if index % 2 == 0 else groups[::-1]
            reps.append(_storm_repetition(h, order, names, rate))
    return _storm_result(cfg.s4_logins, rate, reps)


def _storm_repetition(
    h: Harness, groups: tuple[ChatGroup, ...], names: list[str], rate: float
) -> dict[str, Any]:
    """A storm on each server (A B), then a calm run of the same span on each (B A)."""
    cfg = h.config
    club_storm, ceil_storm = h.new_cids(cfg.s4_logins), h.new_cids(cfg.s4_logins)
    servers = {group.target: group.server for group in groups}
    h.open_clubroom(servers[CLUBROOM], club_storm)
    h.open_ceiling(servers[CEILING], {cid: f"/s4-storm-{cid}" for cid in ceil_storm})
    storms: dict[str, list[tuple[int, dict[str, Any] | None]]] = {
        CLUBROOM: [
            (cid, {"type": "login", "username": name, "password": PASSWORD})
            for cid, name in zip(club_storm, names, strict=True)
        ],
        CEILING: [(cid, None) for cid in ceil_storm],
    }

    def with_storm(group: ChatGroup) -> ChatRun:
        def side(since: int) -> list[Any]:
            start_at = since + int(cfg.s4_storm_delay * 1e9)
            return h.start_requests(
                storms[group.target], concurrency=cfg.s4_logins, start_at_ns=start_at
            )

        return h.run_chat(group, rate, cfg.s4_seconds, side, warmup=cfg.s1_warmup_seconds)

    stormy = alternate(h, groups, 1, with_storm)
    replies = {
        target: [reply for part in stormy[target][0].side_results for reply in part]
        for target in (CLUBROOM, CEILING)
    }
    spans = {target: _storm_span(target_replies) for target, target_replies in replies.items()}
    # at least s4_min_window: a storm over in milliseconds leaves too few samples for a p99
    length = max([end - start for start, end in spans.values()] + [int(cfg.s4_min_window * 1e9)])
    calm_seconds = max(cfg.s4_seconds, cfg.s4_storm_delay + length / 1e9 + 0.5)
    calm = alternate(
        h,
        groups[::-1],
        1,
        lambda g: h.run_chat(g, rate, calm_seconds, warmup=cfg.s1_warmup_seconds),
    )
    h.drop(club_storm + ceil_storm)
    rows: dict[str, Measurement] = {}
    for target in (CLUBROOM, CEILING):
        run = stormy[target][0]
        row = run.measurement(target, (spans[target][0], spans[target][0] + length))
        calm_run = calm[target][0]
        calm_start = calm_run.since_ns + int(cfg.s4_storm_delay * 1e9)
        baseline = calm_run.measurement(target, (calm_start, calm_start + length))
        ok = sum(1 for reply in replies[target] if reply["type"] in ("welcome", "echo"))
        row.delivered += ok + baseline.delivered
        row.expected += cfg.s4_logins + baseline.expected
        row.notes.update(
            baseline_p99_ms=baseline.latency.p99_ms,
            baseline_p50_ms=baseline.latency.p50_ms,
            storm_seconds=(spans[target][1] - spans[target][0]) / 1e9,
            window_seconds=length / 1e9,
            run_seconds=run.duration,
            login=Latency.of(reply.get("elapsed_ns", 0) for reply in replies[target]).__dict__,
            logins_ok=ok,
        )
        rows[target] = row
    club = rows[CLUBROOM]
    return {
        "rows": rows,
        "storm_vs_calm": ratio(club.latency.p99_ms, club.notes["baseline_p99_ms"]),
        "storm_vs_ceiling": ratio(club.latency.p99_ms, rows[CEILING].latency.p99_ms),
    }


def _storm_result(logins: int, rate: float, reps: list[dict[str, Any]]) -> ScenarioResult:
    """The median repetition's rows; ratios as median with min–max."""
    ordered = sorted(reps, key=lambda rep: rep["storm_vs_calm"] or 0)
    middle = ordered[len(ordered) // 2]
    club, ceil = middle["rows"][CLUBROOM], middle["rows"][CEILING]
    vs_calm = spread([rep["storm_vs_calm"] for rep in reps])
    vs_ceiling = spread([rep["storm_vs_ceiling"] for rep in reps])
    summary = [
        {
            "storm_p99_ms": rep["rows"][CLUBROOM].latency.p99_ms,
            "calm_p99_ms": rep["rows"][CLUBROOM].notes["baseline_p99_ms"],
            "storm_vs_calm": rep["storm_vs_calm"],
            "window_seconds": rep["rows"][CLUBROOM].notes["window_seconds"],
            "login_p50_ms": rep["rows"][CLUBROOM].notes["login"]["p50_ms"],
        }
        for rep in reps
    ]
    return ScenarioResult(
        key="s4",
        title=f"S4 {logins} logins during chat at {rate:,.0f} sends/s",
        clubroom=club,
        ceiling=ceil,
        headline=(
            f"chat p99 {_ms(club.latency.p99_ms).strip()} in storm vs "
            f"{_ms(club.notes['baseline_p99_ms']).strip()} calm (median of {len(reps)}); "
            f"storm/calm {vs_calm[1]:.2f} ({vs_calm[0]:.2f}–{vs_calm[2]:.2f})"
            if vs_calm
            else "no ratio"
        ),
        ratios={
            "storm_p99_vs_calm_p99": vs_calm[1] if vs_calm else None,
            "storm_p99_vs_ceiling": vs_ceiling[1] if vs_ceiling else None,
        },
        details={
            "send_rate": rate,
            "spread": {"storm_p99_vs_calm_p99": vs_calm},
            "repetitions": summary,
        },
    )


# --------------------------------------------------------------------------
# S5: join time against room size
# --------------------------------------------------------------------------


def _fill(h: Harness, fillers: list[int], room: str, count: int, window: int) -> dict[str, Any]:
    """Store ``count`` messages in ``room`` through the protocol, pipelined on all fillers."""
    shares = [count // len(fillers) + (1 if i < count % len(fillers) else 0)
              for i in range(len(fillers))]  # fmt: skip
    started = time.monotonic()
    pendings = [
        h.pool.start(h.pool.owner(cid), "fill", cid=cid, room=room, count=share, window=window)
        for cid, share in zip(fillers, shares, strict=True)
    ]
    results = [pending.result() for pending in pendings]
    elapsed = time.monotonic() - started
    acked = sum(result["acked"] for result in results)
    errors = [result["last_error"] for result in results if result["errors"]]
    h.log(f"  filled {room!r}: {acked}/{count} in {elapsed:.1f} s ({acked / elapsed:,.0f}/s)"
          + (f"; errors: {errors}" if errors else ""))  # fmt: skip
    return {"acked": acked, "expected": count, "seconds": elapsed}


def _join_once(h: Harness, cid: int, room: str, stored: int) -> tuple[int, bool]:
    """Join, check the snapshot, leave; return the time to ``joined`` and whether it was right."""
    [joined] = h.requests([(cid, {"type": "join_room", "room": room})])
    h.requests([(cid, {"type": "leave_room", "room": room})], expect="ok")
    right = (
        joined.get("type") == "joined"
        and len(joined.get("messages", [])) == min(50, stored)
        and joined.get("more") == (stored > 50)
    )
    return joined["elapsed_ns"], right


def s5_join_big_room(h: Harness) -> ScenarioResult:
    """Time to ``joined`` in a room of 100,000 messages vs one of 1,000."""
    cfg = h.config
    big, small = "s5 big", "s5 small"
    with h.servers("s5") as (clubroom, ceiling):
        fillers = h.new_cids(cfg.s5_fillers)
        h.open_clubroom(clubroom, fillers)
        h.register(fillers, "s5f")
        h.enter_rooms({big: fillers, small: fillers})
        fills = {room: _fill(h, fillers, room, n, cfg.s5_window)
                 for room, n in ((small, cfg.s5_small), (big, cfg.s5_big))}  # fmt: skip
        joiner, solo = h.new_cids(1), h.new_cids(1)
        h.open_clubroom(clubroom, joiner)
        h.register(joiner, "s5j")
        h.open_ceiling(ceiling, {solo[0]: "/s5-solo"})
        times: dict[str, list[int]] = {big: [], small: [], CEILING: []}
        wrong = 0
        for index in range(cfg.s5_joins):
            for room, stored in ((small, cfg.s5_small), (big, cfg.s5_big))[:: 1 - 2 * (index % 2)]:
                elapsed, right = _join_once(h, joiner[0], room, stored)
                times[room].append(elapsed)
                wrong += not right
                [echo] = h.requests([(solo[0], None)], expect="echo")
                times[CEILING].append(echo["elapsed_ns"])
    return _join_result(cfg, fills, times, big, small, wrong)


def _join_result(
    cfg: BenchConfig,
    fills: dict[str, dict[str, Any]],
    times: dict[str, list[int]],
    big: str,
    small: str,
    wrong: int,
) -> ScenarioResult:
    joins = 2 * cfg.s5_joins
    big_lat, small_lat, echo_lat = (Latency.of(times[key]) for key in (big, small, CEILING))
    sends = sum(fill["expected"] for fill in fills.values())
    acked = sum(fill["acked"] for fill in fills.values())
    club = Measurement(
        target=CLUBROOM,
        delivered=acked + joins - wrong,
        expected=sends + joins,
        latency=big_lat,
        notes={
            "small_room_join": small_lat.__dict__,
            "fill_messages_per_s": {room: fill["acked"] / fill["seconds"]
                                    for room, fill in fills.items()},
            "wrong_snapshots": wrong,
        },
    )  # fmt: skip
    ceil = Measurement(
        target=CEILING,
        delivered=echo_lat.samples,
        expected=joins,
        latency=echo_lat,
        notes={"what": "one frame's round trip in an empty room: the floor of any request"},
    )
    return ScenarioResult(
        key="s5",
        title=f"S5 join: {cfg.s5_big:,} vs {cfg.s5_small:,} messages",
        clubroom=club,
        ceiling=ceil,
        headline=(
            f"join p50 {_ms(big_lat.p50_ms).strip()} ({cfg.s5_big:,}) vs "
            f"{_ms(small_lat.p50_ms).strip()} ({cfg.s5_small:,})"
        ),
        ratios={
            "big_vs_small_p50": ratio(big_lat.p50_ms, small_lat.p50_ms),
            "big_vs_small_p99": ratio(big_lat.p99_ms, small_lat.p99_ms),
            "big_join_vs_ceiling_round_trip": ratio(big_lat.p50_ms, echo_lat.p50_ms),
        },
        details={"fills": fills},
    )

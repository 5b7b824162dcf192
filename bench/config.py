"""The sizes and durations of every scenario, for a full run and for ``--quick``.

Full sizes are the issue's (4 × 50 clients, 500 in a room, 10,000 idle
connections, 50 logins, 100,000 stored messages); quick sizes only prove the
machinery works end to end in a few seconds, so the smoke test can run it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a run; ``full()`` and ``quick()`` are the two presets."""

    quick: bool
    workers: int = 2
    ceiling_loop: str = "asyncio"
    clubroom_loop: str = "auto"  # the server's --event-loop: auto = uvloop when installed
    pin: bool = True  # servers on one half of the CPUs, load generator on the other
    server_cpu_share: float | None = 0.5  # S1 climbs: every server capped at this share of a CPU
    # cluster climbs: each node's cap; two nodes, PostgreSQL, Redis and the load generator
    # must fit on the machine's two cores, or the climbs measure their contention
    cluster_node_cpu_share: float | None = 0.35
    server_root: str | None = None  # another checkout's clubroom_server (A/B comparisons)
    baseline_root: str | None = None  # the checkout the ``versus`` scenario compares against
    postgres: str | None = None  # admin URL: S1 and S5 also run on PostgreSQL (s1pg, s5pg)
    redis: str | None = None  # Redis URL: the cluster scenario's bus (with ``postgres``)
    # each PostgreSQL server's --db-pool-size; None: the server's default. The quick
    # preset (the test suite's smoke run) keeps its nodes' connections few, beside
    # the suite's own servers on the same PostgreSQL
    db_pool_size: int | None = None
    p99_limit_ms: float = 100.0
    drain_timeout: float = 15.0
    # S1: rooms x clients, senders per room; a coarse ladder of total send rates (messages/s)
    # finds each server's edge, then each repetition climbs from below it in fine steps
    s1_rooms: int = 4
    s1_clients: int = 50
    s1_senders: int = 10
    s1_rates: tuple[float, ...] = (50, 75, 110, 160, 240, 360, 540, 800, 1200, 1800, 2700, 4000)
    s1_coarse_seconds: float = 2.0
    s1_coarse_warmup: float = 0.5
    s1_step_seconds: float = 5.0  # measured, after the warm-up: 6 s a step in all
    s1_warmup_seconds: float = 1.0
    s1_repetitions: int = 3
    s1_climb_start: float = 0.8  # × the coarse ladder's best rate
    s1_climb_factors: tuple[float, ...] = (1.5, 1.1)  # gallop, then fine steps near the edge
    s1_climb_max_steps: int = 10
    s1_refine_steps: int = 1
    s1_cpu_rate: float | None = None  # CPU phase rate; None: half the lower sustained rate
    s1_cpu_pairs: int = 3
    ab_cpu_rate: float = 300.0  # CPU phase rate of comparisons that do not climb (metrics)
    # S2: one big room
    s2_clients: int = 500
    s2_senders: int = 5
    s2_rate_per_sender: float = 5.0  # the server's default per-user limit
    s2_seconds: float = 8.0
    s2_rounds: int = 2
    # S3: idle connections
    s3_connections: int = 10_000
    s3_concurrency: int = 100  # the servers' listen backlog is 100: more only drops SYNs
    s3_settle_seconds: float = 1.0
    # S4: login storm during chat at half of S1's peak
    s4_logins: int = 50
    s4_seconds: float = 8.0
    s4_storm_delay: float = 1.0
    s4_fallback_rate: float = 200.0  # sends/s when S1 did not run
    s4_repetitions: int = 3
    s4_min_window: float = 1.0  # s: the span compared is at least this long
    # S5: join time against room size
    s5_big: int = 100_000
    s5_small: int = 1_000
    s5_fillers: int = 4
    s5_window: int = 256
    s5_joins: int = 20
    # long run (opt-in): moderate chat with joins and leaves, RSS and descriptors sampled
    longrun_minutes: float = 30.0
    longrun_sample_seconds: float = 60.0
    longrun_rate: float = 100.0  # sends/s over S1's rooms (5,000 deliveries/s)
    longrun_cycle_seconds: float = 10.0  # chat this long, then a round of joins and leaves
    longrun_chat: bool = True  # False (--no-chat): churn only, what per-user/per-room state costs
    longrun_churn: bool = True  # False (--no-churn): chat only, what the message path costs

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(quick=False)

    @classmethod
    def quick_preset(cls) -> BenchConfig:
        """Small and short: every scenario once, both servers, a few seconds each."""
        return cls(
            quick=True,
            server_cpu_share=None,
            cluster_node_cpu_share=None,
            db_pool_size=3,
            drain_timeout=10.0,
            s1_rooms=2,
            s1_clients=10,
            s1_senders=3,
            s1_rates=(30,),
            s1_coarse_seconds=0.5,
            s1_coarse_warmup=0.1,
            s1_step_seconds=0.5,
            s1_warmup_seconds=0.2,
            s1_repetitions=1,
            s1_climb_max_steps=1,
            s1_refine_steps=0,
            s1_cpu_pairs=1,
            ab_cpu_rate=30.0,
            s2_clients=40,
            s2_senders=5,
            s2_seconds=1.0,
            s2_rounds=1,
            s3_connections=100,
            s3_concurrency=50,
            s3_settle_seconds=0.2,
            s4_logins=3,
            s4_seconds=1.5,
            s4_storm_delay=0.3,
            s4_fallback_rate=30.0,
            s4_repetitions=1,
            s4_min_window=0.5,
            s5_big=1_000,
            s5_small=100,
            s5_fillers=2,
            s5_joins=3,
            longrun_rate=20.0,
            longrun_cycle_seconds=1.0,
        )

    def with_changes(self, **changes: object) -> BenchConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

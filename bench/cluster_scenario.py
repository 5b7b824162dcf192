"""The cluster scenario (issue 13): S1's fan-out on two nodes against one, SQLite beside them.

``python -m bench --only cluster --postgres URL --redis URL`` (or
``python -m bench.cluster``) offers S1's load — its rooms, members and
senders, the same raw-frame workers — to three deployments that are all up
for the whole scenario, the steps alternating between them:

* ``sqlite-1``: one process on the SQLite default (no bus);
* ``pg-1``: one cluster node on a fresh PostgreSQL database and Redis;
* ``pg-2``: two nodes on one fresh database and Redis, member ``i`` of every
  room on node ``i % 2``, so each message reaches half its readers over the bus.

It measures what S1 measures, with S1's machinery (``bench.fanout``): each
deployment's **sustained rate** (every message delivered, p99 ≤ 100 ms),
climbed to in repetitions; then **p99 and CPU per delivery at common rates**
(10,000 and 25,000 deliveries/s, and one just below the lowest sustained
rate), in alternating rounds. CPU is summed over every server process of a
deployment (``/proc``; PostgreSQL and Redis are not counted, in any of them).
Reported against the issue's targets: what the second node adds to p99
(pg-2 − pg-1, per round), CPU per delivery pg-2 / pg-1, sustained pg-2 / pg-1.

**No pinning** in this scenario: two nodes pinned to half the CPUs of a
2-core machine would share one core, which makes "two nodes" mean nothing.
Servers, workers, PostgreSQL and Redis all float over every CPU; the load
generator then competes with the servers, so on 2 cores the sustained rates
are the machine's, and the step lines say when the load generator was the
limit. The rest of the run keeps its pinning.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.fanout import (
    Climb,
    CpuRun,
    _capped_climbs,
    _row,
    _sustained,
    cpu_phase,
    fmt_spread,
    spread,
)
from bench.harness import PASSWORD, SUBPROTOCOL, ChatGroup, Harness, SetupError, _pick_senders
from bench.servers import (
    REPO_ROOT,
    ServerProcess,
    fresh_database,
    start_clubroom,
    wait_listening,
)
from bench.stats import Measurement, ScenarioResult, TargetCheck, ratio
from bench.worker import ClientSpec

KEY = "cluster"
SQLITE, ONE_NODE, TWO_NODES = "sqlite-1", "pg-1", "pg-2"
COMMON_DELIVERY_RATES = (10_000.0, 25_000.0)  # deliveries/s the figures are quoted at
QUICK_DELIVERY_RATES = (200.0,)
NEAR_SUSTAINED = 0.9  # × the lowest median sustained rate: a rate every deployment sustains
P99_ADDED_LIMIT_MS = 5.0
CPU_RATIO_LIMIT = 1.5
SUSTAINED_RATIO_LIMIT = 1.0


@dataclass(frozen=True)
class Deployment:
    """One way of running Clubroom: how many nodes, and whether on PostgreSQL + Redis."""

    label: str
    nodes: int
    clustered: bool


DEPLOYMENTS = (
    Deployment(SQLITE, 1, False),
    Deployment(ONE_NODE, 1, True),
    Deployment(TWO_NODES, 2, True),
)


@dataclass
class NodeSet(ServerProcess):
    """A deployment's server processes measured as one: CPU, waits and memory summed.

    The harness reads a group's cost from its ``server``; for two nodes that
    must be both processes, or the second node's work would be free.
    """

    nodes: list[ServerProcess] = field(default_factory=list)

    @classmethod
    def of(cls, label: str, nodes: list[ServerProcess]) -> NodeSet:
        first = nodes[0]
        return cls(label, first.process, first.log_path, first.port, nodes=nodes)

    def processes(self) -> list[ServerProcess]:
        return list(self.nodes)

    def cpu_seconds(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)

    def wait_seconds(self) -> float:
        """The nodes' mean: "waited 30 % of the step" must mean the same for one node or two
        (summed, two nodes each waiting 10 % looked like one crowded node)."""
        return sum(node.wait_seconds() for node in self.nodes) / len(self.nodes)

    def rss_bytes(self) -> int:
        return sum(node.rss_bytes() for node in self.nodes)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(node.log_tail(lines) for node in self.nodes)

    def stop(self, timeout: float = 15.0) -> None:
        for node in self.nodes:
            node.stop(timeout)


@dataclass
class ClusterResult(ScenarioResult):
    """Two rows like every scenario (pg-2, and pg-1 as its reference) plus sqlite-1."""

    others: list[Measurement] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["others"] = [row.to_json() for row in self.others]
        data["delivered_ratio"] = min(
            [data["delivered_ratio"], *(row.delivered_ratio for row in self.others)]
        )
        return data


# --------------------------------------------------------------------------
# deployments
# --------------------------------------------------------------------------


SUPPORT_PROCESSES = frozenset({"postgres", "redis-server"})


@contextmanager
def unpinned(h: Harness) -> Iterator[None]:
    """Let this process, the workers and the servers started meanwhile use every CPU.

    Servers inherit this process's affinity, so they float too. The run's
    pinning (and the harness's view of it) comes back afterwards. Meanwhile
    PostgreSQL's and Redis's CPU counts as the deployments' own, so "others"
    (what crowds a step) is whatever else ran on the machine.
    """
    h.support_processes = SUPPORT_PROCESSES
    try:
        with _floating(h):
            yield
    finally:
        h.support_processes = frozenset()


@contextmanager
def _floating(h: Harness) -> Iterator[None]:
    if h.server_cpus is None or h.loadgen_cpus is None:
        yield
        return
    servers, loadgen = h.server_cpus, h.loadgen_cpus
    processes = [0, *h.pool.pids]
    for pid in processes:
        os.sched_setaffinity(pid, servers | loadgen)
    h.server_cpus = h.loadgen_cpus = None
    try:
        yield
    finally:
        h.server_cpus, h.loadgen_cpus = servers, loadgen
        for pid in processes:
            os.sched_setaffinity(pid, loadgen)


def start_deployment(h: Harness, deployment: Deployment, stack: ExitStack) -> NodeSet:
    """Its nodes started and listening; stopped (and the database dropped) with ``stack``.

    The first node migrates a fresh database before the second starts, so two
    nodes never race to create the schema.
    """
    cfg = h.config
    if not deployment.clustered:
        db: str = str(h.workdir / f"{KEY}-{deployment.label}.db")
        bus: list[str] = []
    else:
        assert cfg.postgres and cfg.redis
        db = stack.enter_context(fresh_database(cfg.postgres))
        bus = ["--bus", cfg.redis, "--bus-prefix", f"bench-{uuid.uuid4().hex[:8]}"]
    root = Path(cfg.server_root) if cfg.server_root else REPO_ROOT
    nodes: list[ServerProcess] = []
    for index in range(deployment.nodes):
        node_id = ["--node-id", f"{deployment.label}-n{index}"] if deployment.clustered else []
        node = start_clubroom(
            h.workdir, db, root=root, extra_args=[*bus, *node_id], db_pool_size=cfg.db_pool_size
        )
        stack.callback(node.stop)
        nodes.append(wait_listening(node))
    return NodeSet.of(deployment.label, nodes)


def deployment_group(
    h: Harness, label: str, nodes: NodeSet, cfg: BenchConfig, prefix: str
) -> ChatGroup:
    """S1's rooms on one deployment: member ``i`` of each room on node ``i % nodes``."""
    rooms = {f"{prefix} room {r}": h.new_cids(cfg.s1_clients) for r in range(cfg.s1_rooms)}
    specs = [
        ClientSpec(cid, nodes.nodes[index % len(nodes.nodes)].port, "/", SUBPROTOCOL)
        for cids in rooms.values()
        for index, cid in enumerate(cids)
    ]
    h.open(specs)
    accounts = register(h, [spec.cid for spec in specs], f"{prefix}u")
    h.enter_rooms(rooms)
    return ChatGroup(label, nodes, rooms, _pick_senders(rooms, cfg.s1_senders), dict(accounts))


def register(
    h: Harness, cids: list[int], prefix: str, attempts: int = 3
) -> dict[int, tuple[str, str]]:
    """``Harness.register``, retrying what failed under a new name.

    On a crowded machine two nodes registering 200 accounts at once have
    answered ``internal_error`` ("could not save that just now") to a few,
    when PostgreSQL was short of connections (its ``max_connections`` is
    shared by every node's pool and everything else on it): the set-up is not
    what is measured, so those try again.
    """
    accounts: dict[int, tuple[str, str]] = {}
    todo = cids
    for attempt in range(attempts):
        frames = [
            (cid, {"type": "register", "username": f"{prefix}{cid}r{attempt}",
                   "password": PASSWORD})
            for cid in todo
        ]  # fmt: skip
        replies = h.requests(frames, concurrency=64)
        accounts |= {
            r["cid"]: (r["username"], r["token"]) for r in replies if r["type"] == "welcome"
        }
        failed = [reply for reply in replies if reply["type"] != "welcome"]
        if not failed:
            return accounts
        h.log(f"  {len(failed)} registrations failed, e.g. {failed[0]}; trying those again")
        todo = [reply["cid"] for reply in failed]
    raise SetupError(f"{len(todo)} registrations kept failing")


# --------------------------------------------------------------------------
# the scenario
# --------------------------------------------------------------------------


def cluster(h: Harness) -> ClusterResult:
    """Sustained rates of the three deployments, then p99 and CPU at common rates."""
    cfg = h.config
    if not cfg.postgres or not cfg.redis:
        raise ValueError("the cluster scenario needs --postgres URL and --redis URL")
    with unpinned(h), ExitStack() as stack:
        stack.callback(h.pool.call_all, "close")  # runs before the servers stop
        sets = [start_deployment(h, deployment, stack) for deployment in DEPLOYMENTS]
        groups = tuple(
            deployment_group(h, nodes.name, nodes, cfg, f"{KEY}{index}")
            for index, nodes in enumerate(sets)
        )
        time.sleep(0.2)  # let member_joined events settle before anything is measured
        repetitions, cap = (
            _capped_climbs(h, groups, cfg.cluster_node_cpu_share)
            if cfg.s1_repetitions > 0
            else ([], None)
        )
        medians = {
            label: statistics.median(found) if (found := _sustained(repetitions, label)) else None
            for label in (group.target for group in groups)
        }
        rates = common_send_rates(cfg, medians)
        phases: dict[float, dict[str, list[CpuRun]]] = {}
        for rate in rates:
            for group in groups:  # a backlog from the last (failed) round must not carry over
                h.wait_idle(group.server)
            h.log(f"  common rate {rate * cfg.s1_clients:,.0f} deliveries/s "
                  f"({rate:g} sends/s), {cfg.s1_cpu_pairs} round(s)")  # fmt: skip
            phases[rate] = cpu_phase(h, groups, rate, cfg.s1_cpu_pairs)
    result = _result(cfg, [group.target for group in groups], repetitions, phases, medians)
    result.details["climbs_node_cpu_share"] = cap  # each node's own cap; None: uncapped
    return result


def common_send_rates(cfg: BenchConfig, medians: dict[str, float | None]) -> list[float]:
    """The issue's delivery rates as send rates, and one just below the lowest sustained rate.

    The last is left out when it is within 5 % of one already there.
    """
    deliveries = QUICK_DELIVERY_RATES if cfg.quick else COMMON_DELIVERY_RATES
    rates = [dlv / cfg.s1_clients for dlv in deliveries]
    known = [value for value in medians.values() if value]
    if known:
        near = NEAR_SUSTAINED * min(known)
        near = round(near, 1 - math.floor(math.log10(near)))
        if all(abs(near / rate - 1) > 0.05 for rate in rates):
            rates.append(near)
    return sorted(rates)


# --------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------


def _common_rate_figures(
    cfg: BenchConfig, rate: float, runs: dict[str, list[CpuRun]]
) -> dict[str, Any]:
    """One common rate: each deployment's rounds, and pg-2 against pg-1 round by round."""
    pairs = list(zip(runs[TWO_NODES], runs[ONE_NODE], strict=True))
    added = [
        two.step.latency.p99_ms - one.step.latency.p99_ms
        for two, one in pairs
        if two.step.latency.p99_ms is not None and one.step.latency.p99_ms is not None
    ]
    return {
        "send_rate": rate,
        "deliveries_per_s": rate * cfg.s1_clients,
        "deployments": {
            label: {
                "p50_ms": spread([run.step.latency.p50_ms for run in label_runs]),
                "p99_ms": spread([run.step.latency.p99_ms for run in label_runs]),
                "cpu_us_per_delivery": spread([run.cpu_us_per_delivery for run in label_runs]),
                "sustained_every_round": all(run.sustained for run in label_runs),
                "loadgen_limits": sorted({why for run in label_runs for why in run.loadgen_limits}),
                "runs": [run.to_json() for run in label_runs],
            }
            for label, label_runs in runs.items()
        },
        "two_vs_one": {
            "p99_added_ms": spread(added),
            "cpu_per_delivery": spread(
                [ratio(two.cpu_us_per_delivery, one.cpu_us_per_delivery) for two, one in pairs]
            ),
        },
        "one_node_vs_sqlite": {
            "cpu_per_delivery": spread(
                [
                    ratio(one.cpu_us_per_delivery, lite.cpu_us_per_delivery)
                    for one, lite in zip(runs[ONE_NODE], runs[SQLITE], strict=True)
                ]
            ),
        },
    }


def _rate_key(deliveries_per_s: float) -> str:
    return f"{deliveries_per_s:.0f}"


def _result(
    cfg: BenchConfig,
    labels: list[str],
    repetitions: Sequence[Climb],
    phases: dict[float, dict[str, list[CpuRun]]],
    medians: dict[str, float | None],
) -> ClusterResult:
    first_rate = min(phases)
    per_rep = [{label: rep.summary(label) for label in labels} for rep in repetitions]
    sustained_ratio = spread(
        [ratio(rep[TWO_NODES]["deliveries_per_s"], rep[ONE_NODE]["deliveries_per_s"])
         for rep in per_rep]
    )  # fmt: skip
    common = {
        _rate_key(rate * cfg.s1_clients): _common_rate_figures(cfg, rate, runs)
        for rate, runs in sorted(phases.items())
    }
    spreads: dict[str, list[float] | None] = {}
    rows: dict[str, Measurement] = {}
    for label in labels:
        spreads[f"{label} deliveries/s"] = spread(
            [rep[label]["deliveries_per_s"] for rep in per_rep]
        )
        spreads[f"{label} CPU µs/dlv"] = spread(
            [run.cpu_us_per_delivery for run in phases[first_rate][label]]
        )
        rows[label] = _row(label, repetitions, phases[first_rate][label], spreads)
    ratios: dict[str, float | None] = {
        "deliveries_per_s": sustained_ratio[1] if sustained_ratio else None,
        "deliveries_per_s_min": sustained_ratio[0] if sustained_ratio else None,
    }
    for key, figures in common.items():
        for name, values in figures["two_vs_one"].items():
            ratios[f"{name}_at_{key}"] = values[1] if values else None
    interfered = sum(
        1 for rep in per_rep if any(rep[label]["loadgen_limit"] or rep[label]["crowded"]
                                    for label in (ONE_NODE, TWO_NODES))
    )  # fmt: skip
    return ClusterResult(
        key=KEY,
        title=f"Cluster {cfg.s1_rooms}×{cfg.s1_clients} clients: 2 nodes vs 1 (+ SQLite)",
        clubroom=rows[TWO_NODES],
        ceiling=rows[ONE_NODE],
        others=[rows[SQLITE]],
        headline=_headline(ratios, common, sustained_ratio),
        ratios=ratios,
        details={
            "pinning": "none: servers, load generator, PostgreSQL and Redis share every CPU",
            "nodes": {deployment.label: deployment.nodes for deployment in DEPLOYMENTS},
            "sustained_send_rate_median": medians,
            "spread": {"deliveries_per_s": sustained_ratio, **spreads},
            "repetitions": per_rep,
            "interfered_repetitions": interfered,
            "cpu_column_at_deliveries_per_s": first_rate * cfg.s1_clients,
            "common_rates": common,
            "lower_bound": {
                label: any(
                    rep[label]["loadgen_limit"] or rep[label]["climb_ended_before_failing"]
                    for rep in per_rep
                )
                for label in labels
            },
        },
    )


def _headline(
    ratios: dict[str, float | None],
    common: dict[str, dict[str, Any]],
    sustained: list[float] | None,
) -> str:
    parts = []
    if sustained:
        parts.append(f"2 nodes sustain {fmt_spread(sustained)}× 1 node")
    for key in common:
        added = ratios.get(f"p99_added_ms_at_{key}")
        cpu = ratios.get(f"cpu_per_delivery_at_{key}")
        if added is not None and cpu is not None:
            parts.append(f"at {int(key):,}/s p99 {added:+.1f} ms, CPU {cpu:.2f}×")
    return "; ".join(parts)


def summary_text(result: ScenarioResult) -> str:
    """The terminal block: sustained rates per repetition, then every common rate."""
    details = result.details
    lines = [f"  pinning: {details['pinning']}"]
    for index, rep in enumerate(details["repetitions"]):
        parts = [
            f"{label} {summary['deliveries_per_s'] or 0:,.0f}/s"
            + (
                f" (failed at {failed:,.0f} sends/s)"
                if (failed := summary["failed_at_send_rate"])
                else " (never failed)"
            )
            + (" [load generator]" if summary["loadgen_limit"] else "")
            for label, summary in rep.items()
        ]
        lines.append(f"  repetition {index + 1}: " + "; ".join(parts))
    lines.append(
        f"  sustained 2 nodes / 1 node: {fmt_spread(details['spread']['deliveries_per_s'])}"
    )
    lines.append("  at common rates, median (min–max) over rounds:")
    for key, figures in details["common_rates"].items():
        lines.append(f"    {int(key):,} deliveries/s ({figures['send_rate']:g} sends/s)")
        for label, row in figures["deployments"].items():
            flag = "" if row["sustained_every_round"] else "  NOT sustained in every round"
            limits = (
                f"  [load generator: {'; '.join(row['loadgen_limits'])}]"
                if row["loadgen_limits"]
                else ""
            )
            lines.append(
                f"      {label:9} p99 {fmt_spread(row['p99_ms'], 1)} ms  "
                f"CPU {fmt_spread(row['cpu_us_per_delivery'], 1)} µs/dlv{flag}{limits}"
            )
        versus = figures["two_vs_one"]
        lines.append(
            f"      2 vs 1    p99 added {fmt_spread(versus['p99_added_ms'], 1)} ms, "
            f"CPU/delivery {fmt_spread(versus['cpu_per_delivery'])}×"
        )
    return "\n".join(lines)


def targets(result: ScenarioResult, judged: bool) -> list[TargetCheck]:
    """Issue 13's targets: two nodes against one, both on PostgreSQL + Redis."""
    sustained_judged, why = judged, "in --quick"
    interfered = result.details.get("interfered_repetitions", 0)
    if judged and interfered:
        sustained_judged = False
        why = (
            f"(in {interfered} of {len(result.details.get('repetitions', []))} repetitions "
            "the load generator or a crowded machine ended a climb)"
        )
    checks = [
        TargetCheck("cluster: 2 nodes sustain ≥ 1.0× 1 node (median)",
                    result.ratios.get("deliveries_per_s"), SUSTAINED_RATIO_LIMIT, True,
                    sustained_judged, why),
    ]  # fmt: skip
    for key in result.details.get("common_rates", {}):
        checks += [
            TargetCheck(f"cluster: 2 nodes add ≤ 5 ms p99 at {int(key):,} dlv/s (median)",
                        result.ratios.get(f"p99_added_ms_at_{key}"), P99_ADDED_LIMIT_MS, False,
                        judged),
            TargetCheck(f"cluster: 2 nodes CPU/dlv ≤ 1.5× 1 node at {int(key):,}/s (median)",
                        result.ratios.get(f"cpu_per_delivery_at_{key}"), CPU_RATIO_LIMIT, False,
                        judged),
        ]  # fmt: skip
    return checks

"""S1 and its kin: the same fan-out load offered to two servers, side by side.

Two measures, each repeated so that its spread is known:

* **Sustained rate.** The highest send rate at which every message is
  delivered, no connection is lost and p99 ≤ 100 ms. A coarse ladder (×1.5,
  short steps) first finds roughly where each server's edge is; then each
  *repetition* climbs from below that edge (×1.5 while steps pass, then ×1.1
  from the best rate; 1 s of warm-up then 5 s measured, the two servers
  alternating step by step) until a step fails, and one bisection step
  sharpens it. A failed step is retried once only when the failure may not
  be the server's (the load generator fell behind, or the server waited for
  a CPU a tenth of the step); otherwise a stall shows up as spread
  across repetitions instead of being retried away.
* **CPU per delivery at one common moderate rate** (by default half the
  lower of the two servers' sustained rates), in pairs of alternating runs.
  Per-delivery cost falls as the rate rises (per-wake-up costs are shared by
  more frames), so comparing at each server's own peak, or at the highest
  rate both sustained, flatters whichever server has the larger fixed costs.

Every step records whether the *load generator* kept up (sends on schedule,
its workers below 90 % of a core); when it did not at the step that ended a
climb, that server's sustained rate is only a lower bound, and the report
says so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bench.harness import CEILING, CLUBROOM, ChatGroup, Harness, Variant
from bench.quota import capped
from bench.stats import Measurement, ScenarioResult, ratio


def spread(values: Sequence[float | None]) -> list[float] | None:
    """[min, median, max] of the known values, or None when there are none."""
    known = [value for value in values if value is not None]
    if not known:
        return None
    return [min(known), statistics.median(known), max(known)]


@dataclass
class Climb:
    """The search for each server's sustained rate (one repetition, or the coarse ladder)."""

    harness: Harness
    groups: Sequence[ChatGroup]
    seconds: float
    warmup: float
    limit_ms: float
    steps: dict[str, list[Measurement]] = field(default_factory=dict)
    best: dict[str, Measurement | None] = field(default_factory=dict)
    ended_by: dict[str, Measurement | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group in self.groups:
            self.steps[group.target] = []
            self.best[group.target] = None
            self.ended_by[group.target] = None

    def passes(self, step: Measurement) -> bool:
        """Sustained: everything delivered, nobody dropped, p99 within the limit."""
        p99 = step.latency.p99_ms
        return (
            step.delivered == step.expected
            and step.notes["closed_connections"] == 0
            and p99 is not None
            and p99 <= self.limit_ms
        )

    def step(self, group: ChatGroup, send_rate: float) -> bool:
        """Run one step on one server; keep its best passing and lowest failing step.

        A failed step is run once more only if the failure may not be the
        server's: the load generator fell behind, or other processes crowded the
        server's CPU (``ChatRun.crowded``). Both attempts are kept and reported.
        """
        step = self._attempt(group, send_rate)
        interference = step.notes.get("loadgen_limits") or (
            [step.notes["crowded"]] if step.notes.get("crowded") else []
        )
        if not step.notes["passed"] and interference:
            self.harness.log(f"    (again: {'; '.join(interference)})")
            self.harness.wait_idle(group.server)
            step = self._attempt(group, send_rate)
            step.notes["retried_because"] = interference
        ok = bool(step.notes["passed"])
        best, ended = self.best[group.target], self.ended_by[group.target]
        if ok and (best is None or send_rate > best.notes["send_rate"]):
            self.best[group.target] = step
        if not ok:
            if ended is None or send_rate < ended.notes["send_rate"]:
                self.ended_by[group.target] = step
            self.harness.wait_idle(group.server)
        return ok

    def _attempt(self, group: ChatGroup, send_rate: float) -> Measurement:
        run = self.harness.run_chat(group, send_rate, self.seconds, warmup=self.warmup)
        step = run.measurement(group.target)
        step.notes["passed"] = self.passes(step)
        self.steps[group.target].append(step)
        self.harness.log(step_line(group.target, step))
        return step

    def ladder(self, rates: Sequence[float]) -> None:
        """Every rate in turn, both servers alternating, until each has failed once."""
        for index, rate in enumerate(rates):
            for group in self._order(index):
                if self.ended_by[group.target] is None:
                    self.step(group, rate)
            if all(ended is not None for ended in self.ended_by.values()):
                return

    def climb(self, starts: dict[str, float], factors: Sequence[float], max_steps: int) -> None:
        """From each server's start rate up until a step fails, in ever finer steps.

        The first factor (×1.5) gallops up while steps pass; at the first
        failure the climb goes on from the best rate with the next factor
        (×1.1), and ends at the failure with the last one. A failure before any
        success steps down (÷1.5², at most three times), so a start above the
        edge still finds a sustained rate.
        """
        rates = dict(starts)
        phase = dict.fromkeys(rates, 0)
        downs = dict.fromkeys(rates, 0)
        active = set(rates)
        for index in range(max_steps):
            for group in self._order(index):
                target = group.target
                if target not in active:
                    continue
                if self.step(group, round(rates[target], 1)):
                    rates[target] *= factors[phase[target]]
                    continue
                best = self.best[target]
                if best is None and downs[target] < 3:
                    downs[target] += 1
                    rates[target] /= factors[0] ** 2
                elif best is not None and phase[target] + 1 < len(factors):
                    phase[target] += 1
                    rates[target] = best.notes["send_rate"] * factors[phase[target]]
                    ended = self.ended_by[target]
                    if ended is not None and rates[target] >= ended.notes["send_rate"] * 0.99:
                        active.discard(target)  # the finer step would repeat the failure
                else:
                    active.discard(target)
            if not active:
                return

    def refine(self, rounds: int) -> None:
        """Bisect (geometrically) between each server's best and first failing rate."""
        for index in range(rounds):
            for group in self._order(index + 1):
                best, ended = self.best[group.target], self.ended_by[group.target]
                if best is None or ended is None:
                    continue
                low, high = best.notes["send_rate"], ended.notes["send_rate"]
                if high / low > 1.03:
                    self.step(group, round(math.sqrt(low * high), 1))

    def _order(self, index: int) -> Sequence[ChatGroup]:
        return self.groups if index % 2 == 0 else self.groups[::-1]

    def loadgen_limit(self, target: str) -> list[str]:
        """Why the load generator may have ended this server's climb (empty: it did not)."""
        ended = self.ended_by[target]
        return list(ended.notes.get("loadgen_limits") or []) if ended else []

    def summary(self, target: str) -> dict[str, Any]:
        best = self.best[target]
        return {
            "sustained_send_rate": best.notes["send_rate"] if best else None,
            "deliveries_per_s": best.deliveries_per_s if best else None,
            "p99_ms": best.latency.p99_ms if best else None,
            "failed_at_send_rate": (
                ended.notes["send_rate"] if (ended := self.ended_by[target]) else None
            ),
            "loadgen_limit": self.loadgen_limit(target),
            "crowded": ended.notes.get("crowded") if (ended := self.ended_by[target]) else None,
            "climb_ended_before_failing": self.ended_by[target] is None,
        }


def step_line(target: str, step: Measurement) -> str:
    """One log line per step: rate, deliveries, p99, CPU, counts, load generator."""
    lat = step.latency
    p99 = "   —   " if lat.p99_ms is None else f"{lat.p99_ms:7.1f}ms"
    limits = step.notes.get("loadgen_limits") or []
    shares = step.notes.get("worker_cpu_shares") or []
    others = step.notes.get("others_on_server_cpus")
    return (
        f"  {target:12} send {step.notes['send_rate']:>7.1f}/s  deliveries "
        f"{step.deliveries_per_s or 0:>9.0f}/s  p99 {p99}  "
        f"cpu {step.cpu_us_per_delivery or 0:6.2f} µs/dlv  "
        f"{step.delivered}/{step.expected}  loadgen "
        f"{'/'.join(f'{share:.0%}' for share in shares)}"
        + (f"  others {others:.0%}" if others is not None else "")
        + f"  waited {step.notes.get('server_wait_share') or 0:.0%}"
        + f"  {'ok' if step.notes.get('passed', True) else 'FAIL'}"
        + (f"  [LOAD GENERATOR: {'; '.join(limits)}]" if limits else "")
    )


@dataclass
class CpuRun:
    """One server's run in the CPU phase."""

    target: str
    cpu_us_per_delivery: float | None
    sustained: bool
    loadgen_limits: list[str]
    step: Measurement

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_us_per_delivery": self.cpu_us_per_delivery,
            "sustained": self.sustained,
            "loadgen_limits": self.loadgen_limits,
            "p99_ms": self.step.latency.p99_ms,
            "delivered": self.step.delivered,
            "expected": self.step.expected,
        }


def cpu_phase(
    h: Harness, groups: Sequence[ChatGroup], rate: float, pairs: int
) -> dict[str, list[CpuRun]]:
    """``pairs`` × (A, B) at one rate, the order alternating (A B, B A, …)."""
    cfg = h.config
    runs: dict[str, list[CpuRun]] = {group.target: [] for group in groups}
    judge = Climb(h, groups, cfg.s1_step_seconds, cfg.s1_warmup_seconds, cfg.p99_limit_ms)
    for index in range(pairs):
        for group in groups if index % 2 == 0 else groups[::-1]:
            run = h.run_chat(group, rate, cfg.s1_step_seconds, warmup=cfg.s1_warmup_seconds)
            step = run.measurement(group.target)
            step.notes["passed"] = judge.passes(step)
            h.log(step_line(group.target, step) + "  (CPU phase)")
            runs[group.target].append(
                CpuRun(
                    group.target,
                    step.cpu_us_per_delivery,
                    step.notes["passed"],
                    list(step.notes["loadgen_limits"]),
                    step,
                )
            )
    return runs


def moderate_rate(medians: Sequence[float | None], fallback: float) -> float:
    """Half the lower of the servers' median sustained rates, to two significant digits."""
    known = [value for value in medians if value]
    if not known:
        return fallback
    half = min(known) / 2
    digits = 1 - math.floor(math.log10(half))
    return round(half, digits)


def compare(
    h: Harness,
    key: str,
    title: str,
    variants: Sequence[Variant],
    *,
    climb: bool = True,
    cpu_rate: float | None = None,
) -> ScenarioResult:
    """S1's load on two servers: sustained rates over repetitions, then CPU at one rate.

    The first variant is the subject (its figures over the second's are the
    ratios), the second the reference: the ceiling in S1, metrics off, the
    baseline checkout.
    """
    cfg = h.config
    with h.variants(key, variants) as started:
        groups = h.variant_groups(
            variants, started, cfg.s1_rooms, cfg.s1_clients, cfg.s1_senders, key
        )
        labels = [group.target for group in groups]
        repetitions: list[Climb] = []
        cap: float | None = None
        if climb and cfg.s1_repetitions > 0:
            repetitions, cap = _capped_climbs(h, groups, cfg.server_cpu_share)
        # A capped climb finds about ``cap`` × what the server sustains uncapped: the
        # rates derived from it (the CPU phase's, S4's) are scaled back to uncapped ones.
        scale = 1 / cap if cap else 1.0
        medians = {
            label: statistics.median(values) * scale
            if (values := _sustained(repetitions, label))
            else None
            for label in labels
        }
        rate = cpu_rate or cfg.s1_cpu_rate or moderate_rate(list(medians.values()), cfg.ab_cpu_rate)
        h.log(f"  CPU phase at {rate:g} sends/s, {cfg.s1_cpu_pairs} pair(s)")
        cpu = cpu_phase(h, groups, rate, cfg.s1_cpu_pairs)
    result = _result(key, title, labels, repetitions, cpu, rate, medians)
    result.details["climbs_server_cpu_share"] = cap  # None: uncapped
    return result


def _capped_climbs(
    h: Harness, groups: Sequence[ChatGroup], share: float | None
) -> tuple[list[Climb], float | None]:
    """``_climbs`` with every server process capped at ``share`` of a CPU meanwhile.

    Where a cgroup allows (``bench/quota.py``); returns the share, None if
    uncapped. Each process gets a cap of its own: a cluster's two nodes
    together get twice one node's, as two machines would.
    """
    with capped([group.server for group in groups], share) as uncapped:
        if share is not None:
            h.log(
                f"  climbs: every server process capped at {share:g} CPU (cgroup quota)"
                if not uncapped
                else "  climbs: UNCAPPED — no writable cgroup CPU controller here"
            )
        return _climbs(h, groups), None if uncapped else share


def _climbs(h: Harness, groups: Sequence[ChatGroup]) -> list[Climb]:
    """The coarse ladder, then the repetitions that each climb from below its edge."""
    cfg = h.config
    h.log("  coarse ladder (finds where each server's edge is; not reported)")
    coarse = Climb(h, groups, cfg.s1_coarse_seconds, cfg.s1_coarse_warmup, cfg.p99_limit_ms)
    coarse.ladder(cfg.s1_rates)
    starts = {}
    for group in groups:
        best = coarse.best[group.target]
        starts[group.target] = (
            cfg.s1_climb_start * best.notes["send_rate"] if best else cfg.s1_rates[0]
        )
    repetitions: list[Climb] = []
    for index in range(cfg.s1_repetitions):
        h.log(f"  repetition {index + 1} of {cfg.s1_repetitions}")
        order = groups if index % 2 == 0 else groups[::-1]
        rep = Climb(h, order, cfg.s1_step_seconds, cfg.s1_warmup_seconds, cfg.p99_limit_ms)
        rep.climb(starts, cfg.s1_climb_factors, cfg.s1_climb_max_steps)
        rep.refine(cfg.s1_refine_steps)
        repetitions.append(rep)
    return repetitions


def _sustained(repetitions: Sequence[Climb], label: str) -> list[float]:
    return [best.notes["send_rate"] for rep in repetitions if (best := rep.best[label]) is not None]


def _result(
    key: str,
    title: str,
    labels: Sequence[str],
    repetitions: Sequence[Climb],
    cpu: dict[str, list[CpuRun]],
    rate: float,
    medians: dict[str, float | None],
) -> ScenarioResult:
    subject, reference = labels
    per_rep = [
        {
            **{label: rep.summary(label) for label in labels},
            "ratio": ratio(
                rep.summary(subject)["deliveries_per_s"], rep.summary(reference)["deliveries_per_s"]
            ),
        }
        for rep in repetitions
    ]
    cpu_ratios = [
        ratio(a.cpu_us_per_delivery, b.cpu_us_per_delivery)
        for a, b in zip(cpu[subject], cpu[reference], strict=True)
    ]
    spreads: dict[str, list[float] | None] = {
        "deliveries_per_s": spread([rep["ratio"] for rep in per_rep]),
        "cpu_per_delivery_same_load": spread(cpu_ratios),
    }
    rows = {}
    for label in labels:
        spreads[f"{label} deliveries/s"] = spread(
            [rep[label]["deliveries_per_s"] for rep in per_rep]
        )
        spreads[f"{label} CPU µs/dlv"] = spread([run.cpu_us_per_delivery for run in cpu[label]])
        rows[label] = _row(label, repetitions, cpu[label], spreads)
    loadgen_notes = (
        [
            f"repetition {index + 1}: {label}'s sustained rate is a lower bound — the LOAD "
            f"GENERATOR was the limit ({'; '.join(rep[label]['loadgen_limit'])})"
            for index, rep in enumerate(per_rep)
            for label in labels
            if rep[label]["loadgen_limit"]
        ]
        + [
            f"repetition {index + 1}: {label} never failed (the climb ran out of steps): "
            "its sustained rate is a lower bound"
            for index, rep in enumerate(per_rep)
            for label in labels
            if rep[label]["climb_ended_before_failing"]
        ]
        + [
            f"CPU phase: the LOAD GENERATOR was the limit in a run on {label} "
            f"({'; '.join(run.loadgen_limits)})"
            for label in labels
            for run in cpu[label]
            if run.loadgen_limits
        ]
    )
    unsustained = [label for label in labels if not all(run.sustained for run in cpu[label])]
    dlv, cpu_spread = spreads["deliveries_per_s"], spreads["cpu_per_delivery_same_load"]
    headline = (
        f"sustained {fmt_spread(dlv)}× {reference}; " if dlv else ""
    ) + f"CPU/delivery at {rate:g} sends/s {fmt_spread(cpu_spread)}×"
    return ScenarioResult(
        key=key,
        title=title,
        clubroom=rows[subject],
        ceiling=rows[reference],
        headline=headline,
        ratios={
            "deliveries_per_s": dlv[1] if dlv else None,
            "deliveries_per_s_min": dlv[0] if dlv else None,
            "cpu_per_delivery_same_load": cpu_spread[1] if cpu_spread else None,
        },
        details={
            "peak_send_rate": medians.get(subject),
            "same_load_send_rate": rate,
            "spread": spreads,
            "repetitions": per_rep,
            "cpu_runs": {label: [run.to_json() for run in runs] for label, runs in cpu.items()},
            "cpu_ratios": cpu_ratios,
            "interfered_repetitions": sum(
                1
                for rep in per_rep
                if any(rep[label]["loadgen_limit"] or rep[label]["crowded"] for label in labels)
            ),
            "cpu_rate_not_sustained_by": unsustained,
            "loadgen_notes": loadgen_notes,
            "lower_bound": {
                label: any(
                    rep[label]["loadgen_limit"] or rep[label]["climb_ended_before_failing"]
                    for rep in per_rep
                )
                for label in labels
            },
            "steps": {
                f"repetition {index + 1}": {
                    label: [step.to_json() for step in steps] for label, steps in rep.steps.items()
                }
                for index, rep in enumerate(repetitions)
            },
        },
    )


def _row(
    label: str,
    repetitions: Sequence[Climb],
    cpu: Sequence[CpuRun],
    spreads: dict[str, list[float] | None],
) -> Measurement:
    """The table row: the median repetition's sustained step, CPU from the CPU phase."""
    bests = sorted(
        (best for rep in repetitions if (best := rep.best[label]) is not None),
        key=lambda step: step.deliveries_per_s or 0,
    )
    if bests:
        row = replace(bests[len(bests) // 2], notes=dict(bests[len(bests) // 2].notes))
    else:  # no climb: the CPU phase's median run
        by_cpu = sorted(cpu, key=lambda run: run.cpu_us_per_delivery or 0)
        middle = by_cpu[len(by_cpu) // 2].step
        row = replace(middle, notes=dict(middle.notes))
        row.delivered = sum(run.step.delivered for run in cpu)
        row.expected = sum(run.step.expected for run in cpu)
    cpu_spread = spreads.get(f"{label} CPU µs/dlv")
    row.cpu_us_per_delivery = cpu_spread[1] if cpu_spread else None
    row.notes["spread"] = {
        "deliveries_per_s": spreads.get(f"{label} deliveries/s"),
        "cpu_us_per_delivery": cpu_spread,
    }
    return row


def fmt_spread(values: list[float] | None, digits: int = 2) -> str:
    """``median (min–max)``, or a dash when there is nothing to show."""
    if not values:
        return "—"
    low, middle, high = values
    return f"{middle:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def s1_fanout(h: Harness) -> ScenarioResult:
    """4 rooms × 50 clients, 10 senders per room: Clubroom against the ceiling."""
    cfg = h.config
    return compare(
        h,
        "s1",
        f"S1 {cfg.s1_rooms}×{cfg.s1_clients} clients, fan-out",
        (Variant(CLUBROOM), Variant(CEILING, kind=CEILING)),
    )


def metrics_cost(h: Harness) -> ScenarioResult:
    """S1's load on Clubroom with /metrics served (and scraped every 5 s) vs without."""
    cfg = h.config
    return compare(
        h,
        "metrics",
        f"S1 load, /metrics on vs off, {cfg.s1_rooms}×{cfg.s1_clients} clients",
        (Variant("metrics on", metrics=True), Variant("metrics off")),
        climb=False,
        cpu_rate=cfg.s1_cpu_rate or cfg.ab_cpu_rate,
    )


def versus_baseline(h: Harness) -> ScenarioResult:
    """S1 with this checkout's server against another checkout's (``--baseline-root``)."""
    cfg = h.config
    if not cfg.baseline_root:
        raise ValueError("the versus scenario needs --baseline-root PATH")
    return compare(
        h,
        "versus",
        f"S1 {cfg.s1_rooms}×{cfg.s1_clients} clients, this server vs baseline",
        (Variant("this server", root=cfg.server_root), Variant("baseline", root=cfg.baseline_root)),
    )

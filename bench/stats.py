"""Result records and the arithmetic on them (percentiles, rates, ratios).

Every scenario reduces to one ``Measurement`` per server, so the table, the
JSON file and the smoke test all read the same few fields.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


def merge_arrays(chunks: Iterable[bytes]) -> array[int]:
    """Join the ``array('q')`` byte strings that workers send back."""
    merged = array("q")
    for chunk in chunks:
        merged.frombytes(chunk)
    return merged


@dataclass(frozen=True)
class Latency:
    """p50 / p99 / max of a set of latencies, in milliseconds."""

    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    samples: int

    @classmethod
    def of(cls, latencies_ns: Iterable[int]) -> Latency:
        """Nearest-rank percentiles over every sample (no sampling, no histogram)."""
        ordered = sorted(latencies_ns)
        if not ordered:
            return cls(None, None, None, 0)

        def rank(q: float) -> float:
            index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
            return ordered[index] / 1e6

        return cls(rank(0.50), rank(0.99), ordered[-1] / 1e6, len(ordered))


@dataclass
class Measurement:
    """What one server achieved in one scenario (or one step of a scenario)."""

    target: str
    delivered: int = 0
    expected: int = 0
    deliveries_per_s: float | None = None
    offered_per_s: float | None = None
    latency: Latency = field(default_factory=lambda: Latency(None, None, None, 0))
    cpu_us_per_delivery: float | None = None
    cpu_seconds: float | None = None
    rss_mib: float | None = None
    loadgen_cpu_share: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def delivered_ratio(self) -> float:
        """delivered / expected; 1.0 when nothing was expected and nothing lost."""
        return 1.0 if self.expected == 0 else self.delivered / self.expected

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["delivered_ratio"] = self.delivered_ratio
        return data


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is unknown or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


@dataclass
class ScenarioResult:
    """Both servers' measurements for one scenario, plus its headline figures."""

    key: str
    title: str
    clubroom: Measurement
    ceiling: Measurement | None  # None: a scenario of Clubroom alone (the long run)
    headline: str = ""
    ratios: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "headline": self.headline,
            "clubroom": self.clubroom.to_json(),
            "ceiling": self.ceiling.to_json() if self.ceiling else None,
            "delivered_ratio": min(
                self.clubroom.delivered_ratio,
                self.ceiling.delivered_ratio if self.ceiling else 1.0,
            ),
            "ratios": self.ratios,
            "details": self.details,
        }


@dataclass(frozen=True)
class TargetCheck:
    """One of the issue's targets: the measured value against its limit."""

    name: str
    value: float | None
    limit: float
    higher_is_better: bool = False
    judged: bool = True  # False: the run cannot measure it (``--quick``); shown, not judged
    why_not: str = "in --quick"  # printed as "not judged <why_not>"

    @property
    def passed(self) -> bool | None:
        if self.value is None or not self.judged:
            return None
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

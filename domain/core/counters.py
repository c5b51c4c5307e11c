"""The flows' counters for /metrics, kept in the store: `count` and `observe` add to a `flow_counters` row
in the caller's transaction, the one that records the event they count, so a figure is never bumped for
an event that rolled back and never goes back when the event's rows are pruned (Prometheus would read a
drop as a reset). For events of low volume (builds, deploys, releases, approvals, batch messages, dead
triggers, workflow ends): a row that every event updated would make busy writers wait on one another
(the phase figures fold their audit rows instead: domain/phases/phase_metrics.py).

A histogram is one row per bucket, named by its upper bound `le` (non-cumulative; the reader sums them up
to each bound, so rows of bounds since changed still count where they belong). A plain counter is the
row of `le` = infinity.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from domain.core.models import FlowCounter

# Seconds. A build is a platform call and a sensor tick; a release builds several repositories; a person
# decides an approval within minutes to days.
BUILD_BUCKETS: tuple[float, ...] = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RELEASE_BUCKETS: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
DECISION_BUCKETS: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0, 259200.0)
# The histograms' names and their bounds: `observe` buckets by them, the reader renders them.
BOUNDS: dict[str, tuple[float, ...]] = {
    "build_duration_seconds": BUILD_BUCKETS,
    "release_duration_seconds": RELEASE_BUCKETS,
    "approval_decision_seconds": DECISION_BUCKETS,
}

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs

# One text for both backends (they share the upsert syntax).
_ADD = text(
    "INSERT INTO flow_counters (name, labels, le, count, total) VALUES (:name, :labels, :le, :count, :total) "
    "ON CONFLICT (name, labels, le) "
    "DO UPDATE SET count = flow_counters.count + excluded.count, total = flow_counters.total + excluded.total"
)


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts: `buckets[i]` observations <= `bounds[i]`; `count` is the +Inf bucket."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    count: int
    total: float


def upper_bound(bounds: Sequence[float], value: float) -> float:
    """The first bound >= value: the bucket's `le`; infinity past the last."""
    return next((bound for bound in bounds if value <= bound), math.inf)


def _key(labels: Mapping[str, str] | None) -> str:
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


def count(session: Session | Connection, name: str, labels: Mapping[str, str] | None = None, by: int = 1) -> None:
    """Add `by` to the counter `name` of `labels`, in the caller's transaction."""
    if by:
        session.execute(_ADD, {"name": name, "labels": _key(labels), "le": math.inf, "count": by, "total": 0.0})


def observe(session: Session, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
    """Add one observation of `value` (seconds, clamped at 0: two hosts' clocks) to the histogram `name`
    (its bounds in BOUNDS), in the caller's transaction."""
    value = max(value, 0.0)
    le = upper_bound(BOUNDS[name], value)
    session.execute(_ADD, {"name": name, "labels": _key(labels), "le": le, "count": 1, "total": value})


@dataclass(frozen=True)
class Counters:
    """One scrape's flow counters: plain counters by name and labels, histograms by name and labels."""

    counters: dict[tuple[str, Labels], int]
    histograms: dict[tuple[str, Labels], Histogram]

    def value(self, name: str, **labels: str) -> int:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)


def read(session: Session) -> Counters:
    rows = session.execute(
        select(FlowCounter.name, FlowCounter.labels, FlowCounter.le, FlowCounter.count, FlowCounter.total)
    ).all()
    counters: dict[tuple[str, Labels], int] = {}
    per_le: dict[tuple[str, Labels], dict[float, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[tuple[str, Labels], float] = defaultdict(float)
    for name, labels, le, n, total in rows:
        key = (str(name), tuple(sorted(json.loads(labels).items())))
        if name in BOUNDS:
            per_le[key][float(le)] += int(n)
            totals[key] += float(total)
        else:
            counters[key] = int(n)
    histograms = {key: histogram(BOUNDS[key[0]], counts, totals[key]) for key, counts in per_le.items()}
    return Counters(counters, histograms)


def histogram(bounds: tuple[float, ...], per_le: Mapping[float, int], total: float) -> Histogram:
    """The cumulative histogram of non-cumulative counts per upper bound."""
    return Histogram(
        bounds=bounds,
        buckets=tuple(sum(n for le, n in per_le.items() if le <= bound) for bound in bounds),
        count=sum(per_le.values()),
        total=total,
    )

"""Phase figures for /metrics: transitions per phase and outcome, and two latency histograms per phase:
the phase's own run time (`duration`, every outcome) and end to end (`latency`, from the trigger's
enqueue to its completed audit row).

They are counters in the store (`phase_metrics`), kept by the writer of each phase audit row in the same
transaction (`observe`): a scrape reads a few dozen rows whatever the volume, and no counter goes back
when old audit or queue rows are pruned (Prometheus would read that as a reset). One row per phase,
series, outcome and bucket, named by its upper bound `le` (non-cumulative; the reader sums them up to
each bound, so rows of bounds since changed still count where they belong)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from domain.models import PhaseMetric, PhaseOutcome, TriggerQueue

# Seconds. A phase's own run is short (a call to the integrations backend, a charge, a PDF); end to end
# adds the sensor's tick, the run's start and any backoff after a failure.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)
DURATION, LATENCY = "duration", "latency"
BOUNDS = {DURATION: DURATION_BUCKETS, LATENCY: LATENCY_BUCKETS}


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


def observe(
    session: Session,
    *,
    phase: int,
    outcome: PhaseOutcome,
    duration_s: float,
    trigger_id: int | None,
    finished_at: datetime,
) -> None:
    """Count one phase run of one trigger, in the caller's transaction (the one writing its audit row)."""
    _add(session, phase, DURATION, outcome.value, duration_s)
    if outcome is PhaseOutcome.COMPLETED and trigger_id is not None:
        enqueued = session.scalar(select(TriggerQueue.created_at).where(TriggerQueue.id == trigger_id))
        if enqueued is not None:
            _add(session, phase, LATENCY, outcome.value, max((finished_at - enqueued).total_seconds(), 0.0))


def _add(session: Session, phase: int, series: str, outcome: str, value: float) -> None:
    # One upsert: concurrent writers of the same counter wait on its row, none is lost.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(PhaseMetric).values(
        phase=phase, series=series, outcome=outcome, le=upper_bound(BOUNDS[series], value), count=1, total=value
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["phase", "series", "outcome", "le"],
            set_={"count": PhaseMetric.count + 1, "total": PhaseMetric.total + statement.excluded.total},
        )
    )


def transitions(session: Session) -> dict[tuple[int, str], int]:
    """Phase runs per (phase, outcome), ever."""
    rows = session.execute(
        select(PhaseMetric.phase, PhaseMetric.outcome, func.sum(PhaseMetric.count))
        .where(PhaseMetric.series == DURATION)
        .group_by(PhaseMetric.phase, PhaseMetric.outcome)
    ).all()
    return {(int(phase), str(outcome)): int(count) for phase, outcome, count in rows}


def histograms(session: Session, series: str) -> dict[int, Histogram]:
    """One series' histogram per phase (every outcome summed)."""
    bounds = BOUNDS[series]
    per_bucket: dict[int, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[int, float] = defaultdict(float)
    rows = session.execute(
        select(PhaseMetric.phase, PhaseMetric.le, func.sum(PhaseMetric.count), func.sum(PhaseMetric.total))
        .where(PhaseMetric.series == series)
        .group_by(PhaseMetric.phase, PhaseMetric.le)
    ).all()
    for phase, le, count, total in rows:
        per_bucket[int(phase)][float(le)] += int(count)
        totals[int(phase)] += float(total or 0.0)
    return {
        phase: Histogram(
            bounds=bounds,
            buckets=tuple(sum(n for le, n in counts.items() if le <= bound) for bound in bounds),
            count=sum(counts.values()),
            total=totals[phase],
        )
        for phase, counts in per_bucket.items()
    }


def durations(session: Session) -> dict[int, Histogram]:
    """Each phase's own run time, all outcomes."""
    return histograms(session, DURATION)


def latencies(session: Session) -> dict[int, Histogram]:
    """Enqueue -> completed, per phase."""
    return histograms(session, LATENCY)

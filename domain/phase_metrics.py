"""Phase figures for /metrics, read from the phase audit rows the run workers write (one per phase run of
one trigger): transitions per phase and outcome, and two latency histograms per phase: the phase's own
run time (`duration_s`) and end to end, from the trigger's enqueue to its completed audit row.

Each is one aggregate query over phase_audit (and trigger_queue by primary key), so a scrape costs a
scan of the audit rows: cheap at this project's volumes; at millions of rows a counter table kept by the
writer would replace it (see the README, "Metrics")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.orm import Session

from domain.models import PhaseAudit, PhaseOutcome, TriggerQueue

# Seconds. A phase's own run is short (a call to the integrations backend, a charge, a PDF); end to end
# adds the sensor's tick, the run's start and any backoff after a failure.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts: `buckets[i]` observations <= `bounds[i]`; `count` is the +Inf bucket."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    count: int
    total: float


def transitions(session: Session) -> dict[tuple[int, str], int]:
    """Phase runs per (phase, outcome) since the audit rows began."""
    rows = session.execute(
        select(PhaseAudit.phase, PhaseAudit.outcome, func.count()).group_by(PhaseAudit.phase, PhaseAudit.outcome)
    ).all()
    return {(int(phase), str(outcome)): int(count) for phase, outcome, count in rows}


def _aggregates(value: Any, bounds: Sequence[float]) -> list[Any]:
    """count, sum and one cumulative bucket count per bound, of `value`, per phase."""
    return [
        PhaseAudit.phase,
        func.count(),
        func.sum(value),
        *(func.sum(case((value <= bound, 1), else_=0)) for bound in bounds),
    ]


def _histograms(rows: Sequence[Any], bounds: tuple[float, ...]) -> dict[int, Histogram]:
    return {
        int(phase): Histogram(
            bounds=bounds, buckets=tuple(int(c or 0) for c in cumulative), count=int(count), total=float(total or 0.0)
        )
        for phase, count, total, *cumulative in rows
    }


def durations(session: Session) -> dict[int, Histogram]:
    """Each phase's own run time, all outcomes."""
    statement = select(*_aggregates(PhaseAudit.duration_s, DURATION_BUCKETS)).group_by(PhaseAudit.phase)
    return _histograms(session.execute(statement).all(), DURATION_BUCKETS)


def _seconds_between(session: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    # SQLite keeps UTC datetimes as ISO text, which julianday() reads.
    return cast((func.julianday(later) - func.julianday(earlier)) * 86400.0, Float)


def latencies(session: Session) -> dict[int, Histogram]:
    """Enqueue -> completed, per phase, for the completed runs whose trigger row is still kept."""
    seconds = _seconds_between(session, PhaseAudit.finished_at, TriggerQueue.created_at)
    statement = (
        select(*_aggregates(seconds, LATENCY_BUCKETS))
        .select_from(PhaseAudit)
        .join(TriggerQueue, TriggerQueue.id == PhaseAudit.trigger_id)
        .where(PhaseAudit.outcome == PhaseOutcome.COMPLETED.value)
        .group_by(PhaseAudit.phase)
    )
    return _histograms(session.execute(statement).all(), LATENCY_BUCKETS)

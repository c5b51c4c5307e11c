"""Phase figures for /metrics: transitions per phase and outcome, and two latency histograms per phase:
the phase's own run time (`duration`, every outcome) and end to end (`latency`, from the trigger's
enqueue to its completed audit row).

They are counters in the store: `phase_metrics` holds the totals folded from the phase audit rows, and
each audit row says whether it is folded (`counted`). `fold` (the queue sweeper) adds the rows not folded
yet to the totals and marks them, in one transaction; a scrape reads, in one snapshot, the totals plus
the rows not folded yet (a partial index finds them). So a scrape costs the rows since the last fold, not
the whole audit; no counter goes back when queue or audit rows are pruned (Prometheus would read that as
a reset); and the phase runs write nothing more than their audit row (a counter row they all updated
made them wait on one another: the drain lost ~20 %).

One totals row per phase, series, outcome and bucket, named by its upper bound `le` (non-cumulative; the
reader sums them up to each bound, so rows of bounds since changed still count where they belong).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from domain.core.counters import Histogram as Histogram, histogram, upper_bound
from domain.core.models import PhaseAudit, PhaseMetric, PhaseOutcome, TriggerQueue

# Seconds. A phase's own run is short (a call to the integrations backend, a charge, a PDF); end to end
# adds the sensor's tick, the run's start and any backoff after a failure.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)
DURATION, LATENCY = "duration", "latency"
BOUNDS = {DURATION: DURATION_BUCKETS, LATENCY: LATENCY_BUCKETS}
FOLD_LIMIT = 10_000  # audit rows per fold transaction (their ids are one IN list: SQLite allows 32,766)

Cell = tuple[int, str, str, float]  # phase, series, outcome, le
# The partial index's predicate as written: SQLAlchemy renders `~counted` as `counted = 0` on SQLite, whose
# planner then cannot use ix_phase_audit_uncounted (tests/domain/test_phase_metrics.py plans it).
UNCOUNTED = text("NOT phase_audit.counted")


@dataclass(frozen=True)
class Figures:
    """One scrape's phase figures."""

    transitions: dict[tuple[int, str], int]
    durations: dict[int, Histogram]
    latencies: dict[int, Histogram]


def _unfolded(for_update: bool = False) -> Any:
    """The audit rows not folded yet, with their trigger's enqueue time (None once its row is pruned)."""
    statement = (
        select(
            PhaseAudit.id,
            PhaseAudit.phase,
            PhaseAudit.outcome,
            PhaseAudit.duration_s,
            PhaseAudit.finished_at,
            TriggerQueue.created_at,
        )
        .outerjoin(TriggerQueue, TriggerQueue.id == PhaseAudit.trigger_id)
        .where(UNCOUNTED)
        .order_by(PhaseAudit.id)
    )
    if for_update:  # two folds at once take different rows (SQLite: the transaction holds the write lock)
        statement = statement.limit(FOLD_LIMIT).with_for_update(of=PhaseAudit, skip_locked=True)
    return statement


def _cells(rows: Iterable[Any]) -> dict[Cell, list[float]]:
    """(count, sum) per cell of the audit rows (id, phase, outcome, duration_s, finished_at, enqueued_at)."""
    cells: dict[Cell, list[float]] = defaultdict(lambda: [0, 0.0])

    def add(cell: Cell, value: float) -> None:
        cells[cell][0] += 1
        cells[cell][1] += value

    for _, phase, outcome, duration_s, finished_at, enqueued_at in rows:
        add((phase, DURATION, outcome, upper_bound(DURATION_BUCKETS, duration_s)), duration_s)
        if outcome == PhaseOutcome.COMPLETED.value and enqueued_at is not None:
            seconds = max((finished_at - enqueued_at).total_seconds(), 0.0)  # two hosts' clocks
            add((phase, LATENCY, outcome, upper_bound(LATENCY_BUCKETS, seconds)), seconds)
    return cells


# One text for both backends (they share the upsert syntax), compiled once.
_ADD = text(
    "INSERT INTO phase_metrics (phase, series, outcome, le, count, total) "
    "VALUES (:phase, :series, :outcome, :le, :count, :total) "
    "ON CONFLICT (phase, series, outcome, le) "
    "DO UPDATE SET count = phase_metrics.count + excluded.count, total = phase_metrics.total + excluded.total"
)


def fold(session: Session) -> int:
    """Add the audit rows not folded yet (up to FOLD_LIMIT, oldest first) to the totals and mark them
    counted, in the caller's transaction; how many were folded."""
    rows = session.execute(_unfolded(for_update=True)).all()
    if not rows:
        return 0
    for (phase, series, outcome, le), (count, total) in sorted(_cells(rows).items()):
        params = {"phase": phase, "series": series, "outcome": outcome, "le": le, "count": count, "total": total}
        session.execute(_ADD, params)
    session.execute(update(PhaseAudit).where(PhaseAudit.id.in_([row[0] for row in rows])).values(counted=True))
    return len(rows)


def read(session: Session) -> Figures:
    """The totals plus the rows not folded yet. Call it in one snapshot (store.read_transaction): a fold
    committing between its two statements would otherwise count its rows twice."""
    cells = _cells(session.execute(_unfolded()).all())
    totals = session.execute(
        select(
            PhaseMetric.phase,
            PhaseMetric.series,
            PhaseMetric.outcome,
            PhaseMetric.le,
            PhaseMetric.count,
            PhaseMetric.total,
        )
    ).all()
    for phase, series, outcome, le, count, total in totals:
        cell = cells[(int(phase), str(series), str(outcome), float(le))]
        cell[0] += int(count)
        cell[1] += float(total)
    transitions: dict[tuple[int, str], int] = defaultdict(int)
    for (phase, series, outcome, _), (count, _) in cells.items():
        if series == DURATION:
            transitions[(phase, outcome)] += int(count)
    return Figures(dict(transitions), _histograms(cells, DURATION), _histograms(cells, LATENCY))


def _histograms(cells: dict[Cell, list[float]], series: str) -> dict[int, Histogram]:
    """One series' histogram per phase (every outcome summed)."""
    bounds = BOUNDS[series]
    per_le: dict[int, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[int, float] = defaultdict(float)
    for (phase, cell_series, _, le), (count, total) in cells.items():
        if cell_series == series:
            per_le[phase][le] += int(count)
            totals[phase] += total
    return {phase: histogram(bounds, counts, totals[phase]) for phase, counts in per_le.items()}

"""Where a phase-1 trigger's time goes on our side, stage by stage, from timestamps the system keeps: the
queue row (created = the POST's commit, claimed), the Dagster run (created, RUN_STARTING = launched,
RUN_START = its process started, STEP_START), the phase audit row (the work's start and its completion
committed) and the user's stream (the `phase_completed` event's arrival, bench/phase_load.py Seen).

A trigger whose run was created for its claim (the sensor claimed it and launched a run) goes through
every stage; one taken by a run that was already working (a run that claims triggers itself) has no run
stages: claim -> work directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench.common import quantile
from bench.phase_load import Seen

# In the order a trigger goes through them; `total` is from the POST's commit to the stream.
RUN_STAGES = ("claim_to_run_created", "run_queued", "run_process_start", "run_to_step", "step_to_work")
STAGES = ("post_to_claim", *RUN_STAGES, "claim_to_work", "work", "completion_to_stream", "total")


@dataclass(frozen=True)
class TriggerTimes:
    """One trigger's timestamps, seconds since the epoch; the run's are None when none was created for it."""

    created: float
    claimed: float
    work_start: float
    work_end: float
    seen: float
    run_created: float | None = None
    run_starting: float | None = None
    run_start: float | None = None
    step_start: float | None = None


def stages(t: TriggerTimes) -> dict[str, float]:
    """The trigger's stages in milliseconds (those that apply to its path)."""
    out = {"post_to_claim": t.claimed - t.created}
    run = [x for x in (t.run_created, t.run_starting, t.run_start, t.step_start) if x is not None]
    if len(run) == 4 and run[0] >= t.claimed:
        points = [t.claimed, *run, t.work_start]
        out.update({name: b - a for name, a, b in zip(RUN_STAGES, points, points[1:], strict=False)})
    else:
        out["claim_to_work"] = t.work_start - t.claimed
    out["work"] = t.work_end - t.work_start
    out["completion_to_stream"] = t.seen - t.work_end
    out["total"] = t.seen - t.created
    return {name: seconds * 1000 for name, seconds in out.items()}


def stage_figures(per_trigger: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float, int]]:
    """Each stage's p50 and p95 over the triggers that went through it, and how many did."""
    figures: dict[str, tuple[float, float, int]] = {}
    for stage in STAGES:
        values = [t[stage] for t in per_trigger if stage in t]
        if values:
            figures[stage] = (quantile(values, 0.5), quantile(values, 0.95), len(values))
    return figures


TIMES = text(
    "SELECT q.id, EXTRACT(EPOCH FROM q.created_at), EXTRACT(EPOCH FROM q.claimed_at), a.run_id, "
    "EXTRACT(EPOCH FROM a.started_at), EXTRACT(EPOCH FROM a.finished_at) "
    "FROM trigger_queue q JOIN phase_audit a ON a.trigger_id = q.id AND a.outcome = 'completed' "
    "WHERE q.id = ANY(:ids)"
)


def trigger_stages(engine: Engine, dagster_home: Path, seen: Sequence[Seen]) -> list[dict[str, float]]:
    """The stages of each trigger of `seen` whose event arrived, from the store and the Dagster instance
    in `dagster_home` (the stack's)."""
    import dagster as dg

    arrived = {s.trigger_id: s.completed for s in seen if s.completed is not None}
    if not arrived:
        return []
    with engine.connect() as conn:
        rows = conn.execute(TIMES, {"ids": list(arrived)}).all()
    names = {
        dg.DagsterEventType.RUN_STARTING: "run_starting",
        dg.DagsterEventType.RUN_START: "run_start",
        dg.DagsterEventType.STEP_START: "step_start",
    }
    runs: dict[str, dict[str, Any]] = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run_id in {row[3] for row in rows if row[3]}:
            record = instance.get_run_record_by_id(run_id)
            if record is None:
                continue
            times: dict[str, Any] = {"run_created": record.create_timestamp.timestamp()}
            for entry in instance.all_logs(run_id, of_type=set(names)):
                if entry.dagster_event_type in names:
                    times.setdefault(names[entry.dagster_event_type], entry.timestamp)
            runs[run_id] = times
    out = []
    for trigger_id, created, claimed, run_id, started, finished in rows:
        trigger = TriggerTimes(
            created=float(created),
            claimed=float(claimed),
            work_start=float(started),
            work_end=float(finished),
            seen=float(arrived[int(trigger_id)]),
            **runs.get(run_id, {}),
        )
        out.append(stages(trigger))
    return out

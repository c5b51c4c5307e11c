"""Queue benchmarks, through the project's own queue module (domain.queue.queue).

- claim_ack_per_s.{postgresql,sqlite}: claim batches of 50 and ack them, one connection.
- claim_ack_per_s: each transaction acks the last batch and claims the next (queue.ack_and_claim).
- enqueue_per_s.postgresql.{c1,c8}: single-row enqueue with a dedup key, a statement that commits itself, from 1
  and from 8 concurrent clients (threads, a connection each).
- claim_latency_ratio.1m_vs_1k: median claim+ack latency with 1,000,000 finished rows vs 1,000.
- trigger_to_run_start_p95_s: build request committed -> RUN_START, through a running Dagster daemon
  (sensor interval 1 s) and the sandbox.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from bench.common import emit, postgres_engine, quantile, sqlite_engine, trigger_queue_table
from bench.startup import run_parts, spread
from domain.core.store import autocommit, make_engine, transaction
from domain.queue import queue

if TYPE_CHECKING:
    import dagster as dg

BENCH = "queue"
ROOT = Path(__file__).resolve().parents[1]


def _tenant(engine: Engine) -> str:
    tenant_id = str(uuid.uuid4())
    with transaction(engine) as session:
        session.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :n, :c)"),
            {"i": tenant_id, "n": f"bench-{tenant_id[:8]}", "c": datetime.now(UTC)},
        )
    return tenant_id


def _fill(engine: Engine, tenant_id: str, rows: int, state: str = "available") -> None:
    now = datetime.now(UTC)
    batch = []
    for n in range(rows):
        batch.append(
            {
                "kind": "phase",
                "tenant_id": tenant_id,
                "state": state,
                "attempts": 0,
                "max_attempts": 5,
                "payload": {"tenant_id": tenant_id, "user_id": f"u{n}", "sync_id": "s", "phase": 1, "input": {}},
                "available_at": now,
                "created_at": now,
                "updated_at": now,
                "finished_at": now if state == "done" else None,
            }
        )
        if len(batch) == 5000:
            with transaction(engine) as session:
                session.execute(trigger_queue_table().insert(), batch)
            batch = []
    if batch:
        with transaction(engine) as session:
            session.execute(trigger_queue_table().insert(), batch)


def claim_ack_rate(engine: Engine, rows: int = 50_000, batch: int = 50) -> float:
    """A worker's loop as the queue offers it: each transaction acks the batch just finished and claims
    the next (queue.ack_and_claim), so one commit (one fsync) per batch of `batch` rows."""
    _fill(engine, _tenant(engine), rows)
    done = 0
    held: list[tuple[int, str]] = []
    started = time.perf_counter()
    while True:
        with engine.begin() as connection:  # SQLAlchemy Core: a worker loop needs no ORM session
            acked, claimed = queue.ack_and_claim(connection, held, ["phase"], batch, 60, "bench")
        done += len(acked)
        if not claimed:
            break
        held = [(c.id, c.claim_token) for c in claimed]
    elapsed = time.perf_counter() - started
    assert done == rows, (done, rows)
    return rows / elapsed


def enqueue_rate(engine: Engine, clients: int = 1, rows: int = 10_000) -> float:
    """Single-row enqueue with a dedup key, from `clients` threads with a connection each, as the API's
    phase endpoint enqueues (store.autocommit: the insert commits itself, one fsync'd commit each): with
    several, PostgreSQL flushes their commits together (group commit)."""
    tenant_id = _tenant(engine)
    per_client = rows // clients

    def client(c: int) -> None:
        for n in range(c * per_client, (c + 1) * per_client):
            with autocommit(engine) as connection:
                queue.enqueue(
                    connection,
                    "phase",
                    tenant_id,
                    {"tenant_id": tenant_id, "user_id": f"u{n}", "sync_id": "s", "phase": 1},
                    dedup_key=f"phase:{n}",
                )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    return per_client * clients / (time.perf_counter() - started)


def claim_latency(engine: Engine, tenant_id: str, samples: int = 300) -> float:
    _fill(engine, tenant_id, samples)
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        with transaction(engine) as session:
            [claimed] = queue.claim(session, ["phase"], 1, 60, "bench")
        with transaction(engine) as session:
            queue.ack(session, claimed.id, claimed.claim_token)
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)


def _settle(engine: Engine) -> None:
    """Both halves are measured in a steady state, not in the wake of their bulk insert (its dirty pages
    and WAL being written out meanwhile): the table vacuumed and analysed, a checkpoint taken."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE trigger_queue"))
        conn.execute(text("CHECKPOINT"))


def latency_ratio() -> tuple[float, float, float]:
    engine = postgres_engine()
    tenant_id = _tenant(engine)
    _fill(engine, tenant_id, 1000, state="done")
    _settle(engine)
    small = claim_latency(engine, tenant_id)
    with engine.begin() as conn:  # 999,000 more finished rows, made by the database
        conn.execute(
            text(
                "INSERT INTO trigger_queue (kind, tenant_id, payload, state, attempts, max_attempts, available_at, "
                "created_at, updated_at, finished_at) SELECT 'phase', :t, '{}'::jsonb, 'done', 1, 5, now(), now(), "
                "now(), now() FROM generate_series(1, 999000)"
            ),
            {"t": tenant_id},
        )
    _settle(engine)
    large = claim_latency(engine, tenant_id)
    return small, large, large / small


def trigger_to_run_start(samples: int = 40) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Build requests against the demo data through `dagster-daemon` and the sandbox, one at a time.
    Returns the waits (committed -> RUN_START), the launches (committed -> run created) and each run's
    start-up parts (bench/startup.py run_parts: launched -> worker up -> RUN_START)."""
    import dagster as dg

    from cli.demo import seed_demo
    from domain.build import build
    from domain.core import models
    from domain.core.lifecycle import Actor
    from tests.servers import Processes, free_port

    engine = postgres_engine()
    url = engine.url.render_as_string(hide_password=False)
    home = Path(tempfile.mkdtemp(prefix="wrk-bench-dagster-"))
    # BENCH_DAGSTER_YAML: another instance file, for a before/after (e.g. `git show REV:dagster.yaml`).
    (home / "dagster.yaml").write_text((ROOT / os.environ.get("BENCH_DAGSTER_YAML", "dagster.yaml")).read_text())
    env = {
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": url,
        "SENSOR_INTERVAL_SECONDS": "1",
        "SMTP_PORT": str(free_port()),
    }
    with transaction(engine) as session:
        seed_demo(session)
        project = session.scalars(text("SELECT id FROM projects LIMIT 1")).one()
        tenant = session.scalars(text("SELECT tenant_id FROM projects LIMIT 1")).one()
        versions = []
        for n in range(samples):
            v = models.AutomationVersion(
                tenant_id=tenant,
                project_id=project,
                version_number=100 + n,
                blueprint={"steps": [{"id": "a", "type": "noop"}]},
            )
            session.add(v)
            session.flush()
            versions.append(v.id)
    stack = Processes(env)
    stack.env["WRK_API_URL"] = stack.uvicorn("resources.sandbox.app:create_app")
    stack.dagster_daemon(stack.dagster_code_server(home))  # one code server, as `make run` has
    waits: list[float] = []
    launches: list[float] = []
    parts: dict[str, list[float]] = {}
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _warm_up(instance)
            for version_id in versions:
                with transaction(engine) as session:
                    version = session.get(models.AutomationVersion, version_id)
                    assert version is not None
                    trigger_id = build.request_build(session, version, Actor.system("bench"))
                committed = time.time()
                created, started, run_id = _run_start(instance, trigger_id)
                launches.append(created - committed)
                waits.append(started - committed)
                for part, value in run_parts(instance, run_id).items():
                    parts.setdefault(part, []).append(value)
                time.sleep(0.5)
    finally:
        stack.stop()
    return waits, launches, parts


def _warm_up(instance: dg.DagsterInstance) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:  # the daemon is up once the sensors have ticked
        if _ticked(instance):
            return
        time.sleep(0.5)
    raise RuntimeError("the Dagster daemon did not start its sensors")


def _ticked(instance: dg.DagsterInstance) -> bool:
    states = [s for s in instance.all_instigator_state() if s.instigator_type.value == "SENSOR"]
    return any(instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1) for s in states)


def _run_start(instance: dg.DagsterInstance, trigger_id: int, timeout: float = 60) -> tuple[float, float, str]:
    """When the run was created (the sensor's request became a run), when it started, and its id."""
    import dagster as dg

    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"wrk/queue_id": str(trigger_id)}), limit=1)
        if runs:
            records = instance.get_records_for_run(runs[0].run_id, of_type=dg.DagsterEventType.RUN_START).records
            record = instance.get_run_record_by_id(runs[0].run_id)
            if records and record is not None:
                created = record.create_timestamp.timestamp()
                return created, records[0].timestamp, runs[0].run_id
        time.sleep(0.05)
    raise RuntimeError(f"trigger {trigger_id}: no run start within {timeout} s")


def main() -> None:
    emit(BENCH, "claim_ack_per_s.postgresql", claim_ack_rate(postgres_engine()), "rows/s", ">= 20000")
    emit(BENCH, "claim_ack_per_s.sqlite", claim_ack_rate(sqlite_engine()), "rows/s", ">= 3000")
    for clients in (1, 8):
        # A pool as large as the clients: a connection beyond the pool would be closed after each use.
        url = postgres_engine().url.render_as_string(hide_password=False)
        rate = enqueue_rate(make_engine(url, pool_size=clients), clients)
        emit(BENCH, f"enqueue_per_s.postgresql.c{clients}", rate, "rows/s", ">= 2500" if clients == 8 else "-")
    small, large, ratio = latency_ratio()
    emit(
        BENCH,
        "claim_latency_ratio.1m_vs_1k",
        ratio,
        "ratio",
        "<= 1.5",
        median_ms_1k=round(small * 1000, 3),
        median_ms_1m=round(large * 1000, 3),
    )
    if os.environ.get("BENCH_SKIP_DAEMON") != "1":
        waits, _, parts = trigger_to_run_start()
        starts = parts.get("launch_to_run_start_s") or [float("nan")]
        emit(BENCH, "run_start_p50_s", statistics.median(starts), "s", "<= 1.5",
             **{part: spread(values) for part, values in parts.items()})  # fmt: skip
        p95 = quantile(waits, 0.95)
        emit(
            BENCH,
            "trigger_to_run_start_p95_s",
            p95,
            "s",
            "<= 4",
            samples=len(waits),
            median_s=round(statistics.median(waits), 3),
            max_s=round(max(waits), 3),
        )


if __name__ == "__main__":
    main()

"""How soon an abandoned queue claim is rescued after its lease expires, with claimers killed mid-work.

The figure tests/domain/test_queue_kill.py used to assert (within 5 s): the test keeps the correctness
claims (nothing lost, nothing done twice, every abandoned claim rescued before it is claimed again) and
this bench reports the delay, on SQLite and PostgreSQL, with the test's claimer processes
(tests/domain/queue_claimer.py).

- rescue_after_expiry_p95_s.{sqlite,postgresql}, rescue_after_expiry_max_s.{...}
"""

import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from bench.common import emit, postgres_engine, quantile, sqlite_engine, trigger_queue_table
from domain.core.store import transaction

BENCH = "rescue"
ROWS, CLAIMERS, KILLS, LEASE_S = 5_000, 6, 15, 2.0
ROOT = Path(__file__).resolve().parents[1]


def _dt(value: str | datetime) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def rescue_delays(engine: Engine) -> list[float]:
    url = engine.url.render_as_string(hide_password=False)
    now = datetime.now(UTC)
    with transaction(engine) as session:
        tenant_id = "bench-" + now.strftime("%H%M%S%f")
        session.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :i, :c)"), {"i": tenant_id, "c": now}
        )
        for ddl in (
            "CREATE TABLE claims_log (row_id BIGINT, token VARCHAR(64), claimed_at TIMESTAMP, "
            "lease_expires_at TIMESTAMP, worker VARCHAR(64))",
            "CREATE TABLE effects (row_id BIGINT PRIMARY KEY, token VARCHAR(64))",
            "CREATE TABLE reaps_log (row_id BIGINT, reaped_at TIMESTAMP)",
        ):
            session.execute(text(ddl))
        payload = {"tenant_id": tenant_id, "user_id": "u", "sync_id": "s", "phase": 1, "input": {}}
        session.execute(
            trigger_queue_table().insert(),
            [
                {"kind": "phase", "tenant_id": tenant_id, "state": "available", "attempts": 0, "max_attempts": 100,
                 "payload": payload, "available_at": now, "created_at": now, "updated_at": now}
                for _ in range(ROWS)
            ],
        )  # fmt: skip
    markers = Path(tempfile.mkdtemp(prefix="wrk-bench-rescue-"))

    def spawn(name: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "tests.domain.queue_claimer", url, name, str(LEASE_S), str(markers / name)]
        return subprocess.Popen(argv, cwd=ROOT, env=os.environ.copy())

    names = {f"c{n}": f"c{n}" for n in range(CLAIMERS)}
    procs = {slot: spawn(name) for slot, name in names.items()}
    kills = 0
    while any(p.poll() is None for p in procs.values()):
        time.sleep(random.uniform(0.2, 0.5))
        running = [s for s, p in procs.items() if p.poll() is None and (markers / names[s]).exists()]
        if running and kills < KILLS:
            victim = random.choice(running)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            names[victim] = f"{victim}-r{kills}"
            procs[victim] = spawn(names[victim])
    with transaction(engine) as session:
        claims = session.execute(
            text("SELECT row_id, lease_expires_at, claimed_at FROM claims_log ORDER BY row_id, claimed_at")
        ).all()
        reaps = session.execute(text("SELECT row_id, reaped_at FROM reaps_log")).all()
    rescues: dict[int, list[datetime]] = {}
    for row_id, reaped_at in reaps:
        rescues.setdefault(row_id, []).append(_dt(reaped_at))
    delays = []
    for previous, current in itertools.pairwise(claims):
        if previous.row_id == current.row_id:
            expired = _dt(previous.lease_expires_at)
            rescue = min((t for t in rescues.get(previous.row_id, []) if t >= expired), default=None)
            if rescue is not None:
                delays.append((rescue - expired).total_seconds())
    return delays


def main() -> None:
    for backend, make in (("sqlite", sqlite_engine), ("postgresql", postgres_engine)):
        delays = rescue_delays(make())
        if not delays:
            emit(BENCH, f"rescued_claims.{backend}", 0, "claims", "> 0")
            continue
        p95 = quantile(delays, 0.95)
        emit(BENCH, f"rescue_after_expiry_p95_s.{backend}", p95, "s", "<= 5", samples=len(delays))
        emit(BENCH, f"rescue_after_expiry_max_s.{backend}", max(delays), "s", "<= 5", samples=len(delays))


if __name__ == "__main__":
    main()

"""8 claimer processes over 20,000 rows, one killed with SIGKILL every few hundred milliseconds and
restarted: every row ends done exactly once, no row is acked by two tokens, and every abandoned claim is
rescued after its lease expired and before it is claimed again. How soon after expiry is a figure for
`bench/rescue.py`, not a claim a test on a busy machine can make."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from domain.core.models import TriggerQueue
from domain.core.store import transaction
from tests.domain import factories

ROWS = 20_000
CLAIMERS = 8
LEASE_S = 2.0
ROOT = Path(__file__).resolve().parents[2]


def _spawn(url: str, name: str, markers: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.domain.queue_claimer", url, name, str(LEASE_S), str(markers / name)],
        cwd=ROOT,
        env=os.environ.copy(),
    )


def test_killed_claimers_lose_nothing_and_complete_nothing_twice(engine, database_url, tmp_path):
    with transaction(engine) as session:
        tenant_id = factories.tenant(session).id
        session.execute(
            text(
                "CREATE TABLE claims_log (row_id BIGINT, token VARCHAR(64), claimed_at TIMESTAMP, "
                "lease_expires_at TIMESTAMP, worker VARCHAR(64))"
            )
        )
        session.execute(text("CREATE TABLE effects (row_id BIGINT PRIMARY KEY, token VARCHAR(64))"))
        session.execute(text("CREATE TABLE reaps_log (row_id BIGINT, reaped_at TIMESTAMP)"))
        now = datetime.now(UTC)
        session.execute(
            TriggerQueue.__table__.insert(),
            [
                {
                    "kind": "phase",
                    "tenant_id": tenant_id,
                    "state": "available",
                    "attempts": 0,
                    # attempt limits are tested elsewhere; here a row may be abandoned many times and must survive
                    "max_attempts": 100,
                    "payload": {"tenant_id": tenant_id, "user_id": f"u{n}", "sync_id": "s", "phase": 1, "input": {}},
                    "available_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(ROWS)
            ],
        )
    names = {f"c{n}": f"c{n}" for n in range(CLAIMERS)}  # slot -> current process name
    procs = {slot: _spawn(database_url, name, tmp_path) for slot, name in names.items()}
    kills = 0
    try:
        while any(p.poll() is None for p in procs.values()):
            time.sleep(random.uniform(0.2, 0.5))
            # Kill claimers that hold or held a claim (past start-up), so kills land in the middle of work.
            running = [s for s, p in procs.items() if p.poll() is None and (tmp_path / names[s]).exists()]
            if running and kills < 40:
                victim = random.choice(running)
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                kills += 1
                names[victim] = f"{victim}-r{kills}"
                procs[victim] = _spawn(database_url, names[victim], tmp_path)
        assert all(p.returncode == 0 for p in procs.values())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    with transaction(engine) as session:
        states = dict(session.execute(text("SELECT state, count(*) FROM trigger_queue GROUP BY state")).all())
        effects = session.execute(text("SELECT count(*), count(DISTINCT row_id) FROM effects")).one()
        mismatched = session.execute(
            text("SELECT count(*) FROM effects e JOIN trigger_queue q ON q.id = e.row_id WHERE q.state <> 'done'")
        ).scalar_one()
        claims = session.execute(
            text("SELECT row_id, token, claimed_at, lease_expires_at FROM claims_log ORDER BY row_id, claimed_at")
        ).all()
        reaps = session.execute(text("SELECT row_id, reaped_at FROM reaps_log ORDER BY row_id, reaped_at")).all()
    assert kills >= 5
    assert states == {"done": ROWS}
    assert tuple(effects) == (ROWS, ROWS)  # one effect per row: no row completed by two tokens
    assert mismatched == 0
    # Every abandoned claim (a row claimed again) was rescued after its lease expired. The order of a rescue
    # and the next claim is not compared: both times are read by the client around its statement, so two
    # correct transactions can carry timestamps in either order (a busy machine shows it).
    rescues: dict[int, list[datetime]] = {}
    for row_id, reaped_at in reaps:
        rescues.setdefault(row_id, []).append(_dt(reaped_at))
    abandoned = 0
    for previous, current in itertools.pairwise(claims):
        if previous.row_id != current.row_id:
            continue
        abandoned += 1
        expired = _dt(previous.lease_expires_at)
        rescue = min((t for t in rescues.get(previous.row_id, []) if t >= expired), default=None)
        assert rescue is not None, (previous, current)
    assert abandoned > 0  # kills really abandoned claims


def _dt(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value

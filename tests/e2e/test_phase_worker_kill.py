"""The phase worker under kills, through a real dagster-daemon on PostgreSQL: a worker run killed
(SIGKILL) mid-batch, the daemon killed and started again, the store gone while a worker runs. Every
time each trigger ends done with exactly one completed phase run, and phase 7's fee is charged once
(one payment intent per payout, 20 %). Waits are for conditions, never for a time."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from sqlalchemy import create_engine, text

from domain.core import models
from domain.core.store import autocommit, transaction
from domain.phases import phases
from tests.domain import factories
from tests.servers import until
from wrk_instance.launcher import PID_TAG

SLOW = 100_000  # delayed calls: more than the test makes


def _accept(engine, tenant: str, phase: int, **body) -> int:
    with autocommit(engine) as connection:  # as the API queues a phase POST (its NOTIFY included)
        (accepted,) = phases.accept_many(connection, [phases.posted(tenant, phase, phases.parse_request(phase, body))])
        assert isinstance(accepted, phases.Accepted), accepted
        return accepted.trigger_id


def _setup(stack, engine, users: int, prefix: str) -> tuple[str, list[int], list[int]]:
    """A tenant, `users` phase-1 triggers and two phase-7 payouts; the sandbox's call backs off."""
    stack["sandbox"].http.post("/_sandbox/integrations/config", json={"callbacks_enabled": False}).raise_for_status()
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
    ones = [_accept(engine, tenant, 1, user_id=f"{prefix}{n}", sync_id="s", seller_id="x") for n in range(users)]
    sevens = [
        _accept(
            engine,
            tenant,
            7,
            user_id=f"{prefix}-pay{n}",
            sync_id="s",
            claim_id=f"c{n}",
            payout_id=f"{prefix}-payout{n}",
            amount="125.50",
            currency="USD",
        )
        for n in range(2)
    ]
    return tenant, ones, sevens


def _rows(engine, ids: list[int]) -> list[models.TriggerQueue]:
    with transaction(engine) as session:
        return list(session.query(models.TriggerQueue).filter(models.TriggerQueue.id.in_(ids)))


def _all_done(engine, ids: list[int]) -> bool:
    try:
        return all(r.state == "done" for r in _rows(engine, ids))
    except Exception:  # the store is coming back
        return False


def _why(engine, ids, stack) -> str:
    rows = "\n".join(f"{r.id} {r.state} {r.attempts} {r.run_id} {r.last_error}" for r in _rows(engine, ids))
    return rows + "\n" + stack["log"].read_text()[-4000:]


def _delayed_calls_started(sandbox, path: str) -> bool:
    faults = sandbox.http.get("/_sandbox/faults").json()
    return any(f["path"] == path and f["count"] < SLOW for f in faults)


def _holder(instance: DagsterInstance, engine, ids: list[int]):
    """The worker run holding one of `ids` (launched with its id), once its worker's pid is tagged."""
    launched = [r for r in _rows(engine, ids) if r.state == "launched"]
    run = instance.get_run_by_id(launched[0].run_id) if launched else None
    return run if run is not None and PID_TAG in run.tags else None


def _assert_once_each(stack, engine, ones: list[int], sevens: list[int]) -> None:
    """Each trigger done with exactly one completed phase run; each payout charged once, its 20 % fee."""
    with transaction(engine) as session:
        for trigger_id in ones + sevens:
            completed = session.query(models.PhaseAudit).filter_by(trigger_id=trigger_id, outcome="completed").count()
            assert completed == 1, (trigger_id, completed)
        packets = session.query(models.ProofPacket).filter(models.ProofPacket.payout_id.like("%payout%")).all()
    intents = stack["sandbox"].http.get("/_sandbox/payments/intents").json()
    assert len(packets) == len(sevens) and all(p.status == "ready" for p in packets)
    for packet in packets:
        charged = [i for i in intents if i["metadata"].get("proof_packet_id") == packet.id]
        assert [(i["amount"], i["id"]) for i in charged] == [(2510, packet.payment_intent_id)]


@pytest.fixture
def dagster_instance(stack):
    home = str(stack["workspace"]).rsplit("/", 1)[0]
    with DagsterInstance.from_config(home) as instance:
        yield instance


def test_a_worker_killed_mid_batch_loses_nothing_doubles_nothing_and_charges_each_fee_once(
    stack, engine, dagster_instance
):
    sandbox = stack["sandbox"]
    sandbox.fault("POST", "/integrations/v1/syncs", count=SLOW, action="delay", delay_s=2)
    sandbox.fault("POST", "/payments/v1/payment_intents", count=SLOW, action="delay", delay_s=2)
    _, ones, sevens = _setup(stack, engine, 6, "kill")
    until(lambda: _delayed_calls_started(sandbox, "/payments/v1/payment_intents"), lambda: _why(engine, ones, stack))
    worker = until(lambda: _holder(dagster_instance, engine, ones + sevens), "a worker holding triggers")
    held = [r.id for r in _rows(engine, ones + sevens) if r.state == "launched" and r.run_id == worker.run_id]
    os.kill(int(worker.tags[PID_TAG]), signal.SIGKILL)  # mid-batch: its calls are in flight
    sandbox.http.delete("/_sandbox/faults").raise_for_status()
    until(lambda: _all_done(engine, ones + sevens), lambda: _why(engine, ones + sevens, stack))
    killed = dagster_instance.get_run_by_id(worker.run_id)
    assert killed.status == DagsterRunStatus.FAILURE  # run monitoring found its worker gone
    for row in _rows(engine, held):
        assert row.attempts == 2 and row.run_id != worker.run_id  # retried once, by another worker
    _assert_once_each(stack, engine, ones, sevens)


def test_the_daemon_killed_and_started_again_loses_nothing(stack, engine, dagster_instance):
    sandbox = stack["sandbox"]
    sandbox.fault("POST", "/integrations/v1/syncs", count=SLOW, action="delay", delay_s=2)
    _, ones, sevens = _setup(stack, engine, 4, "daemon")
    until(lambda: _delayed_calls_started(sandbox, "/integrations/v1/syncs"), lambda: _why(engine, ones, stack))
    processes = stack["processes"]
    (daemon,) = [p for p in processes.procs if "dagster-daemon" in " ".join(map(str, p.args))]
    daemon.kill()
    daemon.wait()
    processes.procs.remove(daemon)
    sandbox.http.delete("/_sandbox/faults").raise_for_status()
    _, more, more_sevens = _setup(stack, engine, 3, "after")  # queued while no daemon runs
    processes.dagster_daemon(stack["workspace"])
    every = ones + sevens + more + more_sevens
    until(lambda: _all_done(engine, every), lambda: _why(engine, every, stack))
    _assert_once_each(stack, engine, ones + more, sevens + more_sevens)


def test_a_store_outage_while_a_worker_runs_ends_with_every_trigger_done_once(
    stack, engine, database_url, dagster_instance
):
    sandbox = stack["sandbox"]
    sandbox.fault("POST", "/integrations/v1/syncs", count=SLOW, action="delay", delay_s=2)
    _, ones, sevens = _setup(stack, engine, 4, "outage")
    until(lambda: _delayed_calls_started(sandbox, "/integrations/v1/syncs"), lambda: _why(engine, ones, stack))
    worker = until(lambda: _holder(dagster_instance, engine, ones + sevens), "a worker holding triggers")
    name = engine.url.database
    admin = create_engine(os.environ["TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # the store goes away: no new connection, the open ones cut
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name})
    try:
        sandbox.http.delete("/_sandbox/faults").raise_for_status()
        # The worker's calls end while the store is away: it cannot record their outcomes, so its run
        # fails (it does not spin, nor hold them silently); reconciliation waits for the store.
        ended = until(
            lambda: (r := dagster_instance.get_run_by_id(worker.run_id)).is_finished and r,
            lambda: stack["log"].read_text()[-3000:],
        )
        assert ended.status == DagsterRunStatus.FAILURE
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    engine.dispose()
    until(lambda: _all_done(engine, ones + sevens), lambda: _why(engine, ones + sevens, stack))
    _assert_once_each(stack, engine, ones, sevens)
    assert httpx.get(stack["sandbox_url"] + "/_sandbox/faults").json() == []

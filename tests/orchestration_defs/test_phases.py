"""The seven-phase pipeline in process: the phase sensor launches a worker run while triggers are due;
the worker claims them in batches and ends when none is left (PHASE_WORKER_IDLE_S=0 here); each
phase's action goes through the integrations and payments resources (the sandbox over real HTTP); each
trigger has its own outcome (one failing row goes back to the queue alone, with the queue's backoff);
progress never moves backwards and every phase run leaves an audit row; and one phase-1 POST drives the
chain 1 -> 7 through the sandbox's call backs, ending with a proof packet whose hash checks out."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import httpx
import pytest
from sqlalchemy import select, update

from domain.core.models import (
    LearningRecord,
    Notification,
    PhaseAudit,
    PhaseEvent,
    ProofPacket,
    SyncProgress,
    TriggerQueue,
    utcnow,
)
from domain.core.settings import get_settings
from domain.core.store import autocommit, transaction
from domain.core.urls import header_value
from domain.phases import phase_metrics, phases
from domain.queue import queue
from orchestration_defs.phases import TAG_RETIRING, Outside, phase_worker, user_tag
from resources.dagster_resources import DatabaseResource, IntegrationsResource, PaymentsResource
from resources.integrations import integrations_client
from resources.payments import payments_client
from sensors.phases import phase_queue_sensor
from tests.api.conftest import bearer, make_token
from tests.domain import factories
from tests.servers import ServerThread, until


def _resources(database_url: str) -> dict:
    return {
        "database": DatabaseResource(url=database_url),
        "integrations": IntegrationsResource(),
        "payments": PaymentsResource(),
    }


def _tick(instance, database_url) -> list[dg.RunRequest]:
    context = dg.build_sensor_context(
        instance=instance, resources={"database": DatabaseResource(url=database_url)}, sensor_name="phase_queue_sensor"
    )
    return list(phase_queue_sensor.evaluate_tick(context).run_requests or [])


def _run(instance, database_url, request: dg.RunRequest) -> dict:
    result = phase_worker.execute_in_process(instance=instance, tags=request.tags, resources=_resources(database_url))
    assert result.success
    return result.output_for_node("work_phase_triggers")


def _accept(engine, tenant, phase, **body) -> int:
    with autocommit(engine) as connection:  # as the API queues a phase POST
        posted = phases.posted(tenant, phase, phases.parse_request(phase, body))
        (accepted,) = phases.accept_many(connection, [posted])
        assert isinstance(accepted, phases.Accepted), accepted
        return accepted.trigger_id


def _state(engine, trigger_id) -> TriggerQueue:
    with transaction(engine) as session:
        return session.get(TriggerQueue, trigger_id)


def _audit(engine, user) -> list[PhaseAudit]:
    with transaction(engine) as session:
        return list(session.scalars(select(PhaseAudit).where(PhaseAudit.user_id == user).order_by(PhaseAudit.id)))


def _events(engine, user) -> list[PhaseEvent]:
    with transaction(engine) as session:
        return list(session.scalars(select(PhaseEvent).where(PhaseEvent.user_id == user).order_by(PhaseEvent.seq)))


def _calls(sandbox, path):
    return sandbox.calls("POST", path)


def test_one_worker_takes_the_due_triggers_tagged_with_phases_count_and_users(
    phase_env, sandbox, engine, tenant, database_url
):
    instance = dg.DagsterInstance.ephemeral()
    assert _tick(instance, database_url) == []  # nothing due: no worker
    ids = [
        _accept(engine, tenant, 1, user_id="alice", sync_id="s1", seller_id="sel"),
        _accept(engine, tenant, 2, user_id="bob", sync_id="s2"),
        _accept(engine, tenant, 3, user_id="carol@example.com", sync_id="s3"),
    ]
    requests = _tick(instance, database_url)
    assert len(requests) == 1 and requests[0].tags["wrk/queue_kind"] == "phase"
    assert [_state(engine, i).state for i in ids] == ["available"] * 3  # the worker claims them itself
    counts = _run(instance, database_url, requests[0])
    assert counts["completed"] == 3
    assert all(_state(engine, i).state == "done" for i in ids)
    assert _tick(instance, database_url) == []  # nothing due any more
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"wrk/user.alice": "alice"}))
    assert len(runs) == 1 and all(_state(engine, i).run_id == runs[0].run_id for i in ids)
    tags = runs[0].tags
    assert tags["wrk/phase_count"] == "3" and tags["wrk/phases"] == "1,2,3" and tags["wrk/phase"] == "1,2,3"
    assert tags["wrk/user.alice"] == "alice" and tags["wrk/user.bob"] == "bob"
    assert tags[user_tag("carol@example.com")] == "carol@example.com"
    assert tags["wrk/tenants"] == tenant and "wrk/tenant_id" not in tags  # limited per kind, not per tenant
    # each trigger's outcome is in the run's log, with its phase and user (the UI shows it)
    logged = "\n".join(
        r.event_log_entry.user_message
        for r in instance.get_records_for_run(runs[0].run_id).records
        if r.event_log_entry.dagster_event is None
    )
    for trigger_id, phase, user in zip(ids, (1, 2, 3), ("alice", "bob", "carol@example.com"), strict=True):
        assert f"trigger {trigger_id}: phase {phase}, user {user}, completed" in logged
    # each phase's action: one backend call, with the trigger's idempotency key and our call-back URL
    for path, trigger_id in (
        ("/integrations/v1/syncs", ids[0]),
        ("/integrations/v1/detections", ids[1]),
        ("/integrations/v1/evidence-matching", ids[2]),
    ):
        calls = _calls(sandbox, path)
        assert len(calls) == 1 and calls[0]["idempotency_key"].endswith(f":trigger:{trigger_id}")
    for user, phase in (("alice", 1), ("bob", 2), ("carol@example.com", 3)):
        audit = _audit(engine, user)
        assert [(a.phase, a.outcome, a.error) for a in audit] == [(phase, "completed", None)]
        assert audit[0].duration_s >= 0 and audit[0].run_id == runs[0].run_id
        assert [(e.seq, e.type, e.phase) for e in _events(engine, user)] == [
            (1, "phase_started", phase),
            (2, "phase_completed", phase),
        ]
    with transaction(engine) as session:
        progress = session.scalars(select(SyncProgress).where(SyncProgress.user_id == "alice")).one()
        assert (progress.phase, progress.status, progress.percent, progress.seller_id) == (1, "completed", 14, "sel")


def test_the_sensor_keeps_phase_workers_live_while_triggers_are_due_or_queued_lately(
    phase_env, engine, tenant, database_url, monkeypatch
):
    """Every missing worker at once (a burst finds them all started); kept while a trigger was queued in the
    last PHASE_WORKER_IDLE_S, though none is due; a retiring worker not counted (its successor starts)."""
    monkeypatch.setenv("PHASE_WORKERS", "2")
    monkeypatch.setenv("PHASE_WORKER_IDLE_S", "60")
    get_settings.cache_clear()
    instance = dg.DagsterInstance.ephemeral()
    assert _tick(instance, database_url) == []  # nothing ever queued
    trigger = _accept(engine, tenant, 1, user_id="w", sync_id="s")
    first = _tick(instance, database_url)
    assert len(first) == 2 and len({r.run_key for r in first}) == 2  # a run key new for every launch
    runs = [
        instance.create_run_for_job(phase_worker, tags=r.tags, status=status)
        for r, status in zip(first, (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING), strict=True)
    ]
    assert _tick(instance, database_url) == []  # two live (a starting one counts): no third
    with transaction(engine) as session:  # a worker took the trigger: none is due, one was queued lately
        (taken,) = queue.claim(session, [phases.KIND], 10, 60, "phase_worker:x", run_id=runs[0].run_id)
    assert taken.id == trigger
    instance.report_run_failed(runs[1])
    (replacement,) = _tick(instance, database_url)
    assert replacement.run_key not in {r.run_key for r in first}
    instance.create_run_for_job(phase_worker, tags=replacement.tags, status=dg.DagsterRunStatus.STARTED)
    instance.add_run_tags(runs[0].run_id, {TAG_RETIRING: "true"})  # about to end: its successor starts
    (successor,) = _tick(instance, database_url)
    instance.create_run_for_job(phase_worker, tags=successor.tags, status=dg.DagsterRunStatus.STARTING)
    assert _tick(instance, database_url) == []
    monkeypatch.setenv("PHASE_WORKER_IDLE_S", "0")  # nothing queued lately any more, nothing due
    get_settings.cache_clear()
    for run in instance.get_runs():
        if run.status != dg.DagsterRunStatus.FAILURE:
            instance.report_run_failed(run)
    assert _tick(instance, database_url) == []


def test_a_slow_trigger_holds_up_no_trigger_committed_after_it(phase_env, engine, tenant, database_url, monkeypatch):
    """A worker takes the next trigger while one of its threads is still at a slow one: a trigger committed
    meanwhile is done first (no claim waits for the slowest trigger in hand)."""
    import orchestration_defs.phases as worker_module

    monkeypatch.setenv("PHASE_ROW_WORKERS", "2")
    get_settings.cache_clear()
    slow = _accept(engine, tenant, 1, user_id="slow", sync_id="s")
    later: list[int] = []
    act = worker_module.act

    def slow_act(engine_, row, plan, outside):
        if row.trigger_id == slow:  # until the later trigger is done (or long after: never a hang)
            give_up = time.monotonic() + 120
            while time.monotonic() < give_up and not (later and _state(engine, later[0]).state == "done"):
                time.sleep(0.1)
        return act(engine_, row, plan, outside)

    monkeypatch.setattr(worker_module, "act", slow_act)
    instance = dg.DagsterInstance.ephemeral()
    (request,) = _tick(instance, database_url)
    worker = threading.Thread(target=_run, args=(instance, database_url, request))
    worker.start()
    until(lambda: _state(engine, slow).state == "launched", "the worker took the slow trigger")
    later.append(_accept(engine, tenant, 1, user_id="later", sync_id="s"))
    worker.join()
    first, second = _state(engine, later[0]), _state(engine, slow)
    assert first.state == second.state == "done"
    assert first.finished_at < second.finished_at


@pytest.mark.parametrize(("max_triggers", "done"), [(1000, 5), (3, 3)])
def test_a_worker_takes_batch_after_batch_until_none_is_due_or_it_took_its_maximum(
    phase_env, engine, tenant, database_url, monkeypatch, max_triggers, done
):
    """A worker claims PHASE_BATCH_SIZE at a time (launched with its id, its tags updated so the UI finds
    every user) until nothing is due or it took PHASE_RUN_MAX_TRIGGERS; then it ends."""
    monkeypatch.setenv("PHASE_BATCH_SIZE", "2")
    monkeypatch.setenv("PHASE_RUN_MAX_TRIGGERS", str(max_triggers))
    get_settings.cache_clear()
    instance = dg.DagsterInstance.ephemeral()
    ids = [_accept(engine, tenant, 1 + n % 2, user_id=f"b{n}", sync_id="s") for n in range(5)]
    (request,) = _tick(instance, database_url)
    counts = _run(instance, database_url, request)
    assert counts["completed"] == done
    (run,) = instance.get_runs()
    assert [_state(engine, i).state for i in ids] == ["done"] * done + ["available"] * (5 - done)
    assert {_state(engine, i).run_id for i in ids[:done]} == {run.run_id}
    assert run.tags["wrk/phase_count"] == str(done) and run.tags["wrk/phases"] == "1,2"
    assert run.tags["wrk/phase"] == "1,2"  # no longer one phase: no filter on phase 1 alone finds it
    assert all(run.tags[user_tag(f"b{n}")] == f"b{n}" for n in range(done))
    if done == max_triggers:  # it ended at its maximum: tagged retiring (at the latest then), its successor due
        assert run.tags[TAG_RETIRING] == "true"


def test_a_workers_row_threads_run_at_phase_worker_nice(phase_env, engine, tenant, database_url, monkeypatch):
    import orchestration_defs.phases as worker_module

    if os.getpriority(os.PRIO_PROCESS, 0) > 7:
        pytest.skip("this process runs at a nice value above 7 already")
    monkeypatch.setenv("PHASE_WORKER_NICE", "7")
    get_settings.cache_clear()
    seen: list[int] = []
    act = worker_module.act

    def noting_act(engine_, row, plan, outside):
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # Linux: this thread's nice value
        return act(engine_, row, plan, outside)

    monkeypatch.setattr(worker_module, "act", noting_act)
    _accept(engine, tenant, 1, user_id="nice", sync_id="s")
    instance = dg.DagsterInstance.ephemeral()
    (request,) = _tick(instance, database_url)
    assert _run(instance, database_url, request)["completed"] == 1
    assert seen == [7]


def test_an_idle_worker_stays_while_phase_triggers_keep_being_queued(
    phase_env, engine, tenant, database_url, monkeypatch
):
    """A worker with nothing to claim past PHASE_WORKER_IDLE_S stays while triggers are still queued (taken
    by the other workers; here not yet due), as the sensor keeps it; it ends once none was queued lately."""
    monkeypatch.setenv("PHASE_WORKER_IDLE_S", "2")
    get_settings.cache_clear()
    instance = dg.DagsterInstance.ephemeral()
    _accept(engine, tenant, 1, user_id="first", sync_id="s")
    (request,) = _tick(instance, database_url)
    outcome: list[dict] = []
    worker = threading.Thread(target=lambda: outcome.append(_run(instance, database_url, request)))
    worker.start()
    later = utcnow() + timedelta(hours=1)
    for n in range(40):  # 8 s: four times its idle time, a trigger queued every 0.2 s (due in an hour)
        with transaction(engine) as session:
            payload = {"phase": 1, "user_id": f"later{n}", "sync_id": "s", "input": {}}
            queue.enqueue(session, phases.KIND, tenant, {**payload, "tenant_id": tenant}, available_at=later)
        time.sleep(0.2)
        assert worker.is_alive(), f"the worker ended {n * 0.2:.1f} s into the triggers being queued"
    worker.join()  # none queued now: it ends after its idle time
    assert outcome and outcome[0]["completed"] == 1


def test_a_step_delivered_again_carries_on_with_every_row_its_run_holds_and_does_none_twice(
    phase_env, sandbox, engine, tenant, database_url, monkeypatch
):
    """EXECUTOR=celery acks a step late: its worker lost mid-step, the step runs again in the same run,
    finding its rows launched by that run. It processes every one it has not finished first, none twice;
    a run that did nothing would leave them for reconciliation's evidence check instead
    (orchestration_defs/trigger_runs.py on_success)."""
    from orchestration_defs.phases import claim_more, process_row

    get_settings.cache_clear()
    ids = [_accept(engine, tenant, 1, user_id=f"r{n}", sync_id="s") for n in range(6)]
    run_id = str(uuid.uuid4())  # the run whose step is delivered twice
    # The first delivery: it took four triggers, finished two, then was lost.
    rows = claim_more(engine, 4, run_id)
    outside = Outside(integrations_client(), payments_client(), Path(phase_env.proof_packet_dir))
    try:
        assert [process_row(engine, r, run_id, outside, _Log()) for r in rows[:2]] == ["completed"] * 2
    finally:
        outside.integrations.close()
        outside.payments.close()
    # The second delivery, in the same run (its own process: a Dagster instance of its own).
    result = phase_worker.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), resources=_resources(database_url), run_id=run_id
    )
    counts = result.output_for_node("work_phase_triggers")
    assert (counts["completed"], counts["carried"]) == (4, 2)  # the two it held, then the two still due
    assert all(_state(engine, i).state == "done" and _state(engine, i).run_id == run_id for i in ids)
    for n in range(6):
        assert [(a.outcome, a.trigger_id) for a in _audit(engine, f"r{n}")] == [("completed", ids[n])]
    assert len(_calls(sandbox, "/integrations/v1/syncs")) == 6  # each trigger's action once


class _Log:
    def warning(self, message: str) -> None:
        raise AssertionError(message)

    error = warning


def test_phase_four_routes_at_the_exact_boundaries(phase_env, sandbox, engine, tenant, database_url):
    instance = dg.DagsterInstance.ephemeral()
    matches = [
        {"claim_id": c, "confidence": conf, "amount": "10.00", "currency": "USD", "evidence_ids": [f"ev-{c}"]}
        for c, conf in (("auto", "0.85"), ("ask-high", "0.8499"), ("ask-low", "0.50"), ("drop", "0.4999"))
    ]
    trigger = _accept(engine, tenant, 4, user_id="u4", sync_id="s4", matches=matches)
    (request,) = _tick(instance, database_url)
    _run(instance, database_url, request)
    (run,) = instance.get_runs()
    assert run.tags["wrk/phase"] == "4" and run.tags["wrk/phase_count"] == "1"
    assert _state(engine, trigger).state == "done"
    submitted = _calls(sandbox, "/integrations/v1/claims")
    assert len(submitted) == 1 and submitted[0]["idempotency_key"] == f"submit:{tenant}:u4:auto"
    prompts = [e for e in _events(engine, "u4") if e.type == "prompt"]
    assert sorted(e.data["claim_id"] for e in prompts) == ["ask-high", "ask-low"]
    with transaction(engine) as session:
        notes = session.scalars(select(Notification).where(Notification.recipient == "u4")).all()
        assert sorted(n.payload["claim_id"] for n in notes) == ["ask-high", "ask-low"]
        assert all(n.template == "claim_prompt" and n.tenant_id == tenant for n in notes)
    (audit,) = _audit(engine, "u4")
    assert {m["claim_id"]: m["route"] for m in audit.details["routes"]} == {
        "auto": "auto_submit",
        "ask-high": "smart_prompt",
        "ask-low": "smart_prompt",
        "drop": "none",
    }
    assert audit.details["result"] == {
        "auto_submit": ["auto"],
        "smart_prompt": ["ask-high", "ask-low"],
        "none": ["drop"],
    }


def test_phases_five_and_six_start_monitoring_and_record_the_rejection(
    phase_env, sandbox, engine, tenant, database_url
):
    instance = dg.DagsterInstance.ephemeral()
    five = _accept(engine, tenant, 5, user_id="u5", sync_id="s5", claim_id="c1", amount="48.20", currency="USD")
    six = _accept(engine, tenant, 6, user_id="u5", sync_id="s5", claim_id="c2", reason_code="insufficient_evidence")
    _run(instance, database_url, _tick(instance, database_url)[0])
    assert _state(engine, five).state == "done" and _state(engine, six).state == "done"
    assert len(_calls(sandbox, "/integrations/v1/payout-monitoring")) == 1
    learning = _calls(sandbox, "/integrations/v1/learning-pipeline")
    with transaction(engine) as session:
        record = session.scalars(select(LearningRecord).where(LearningRecord.user_id == "u5")).one()
    assert (record.claim_id, record.reason_code, record.tenant_id) == ("c2", "insufficient_evidence", tenant)
    assert record.pipeline_triggered_at is not None and record.pipeline_job_id
    assert len(learning) == 1 and learning[0]["idempotency_key"] == f"learning:{record.id}"


def _packet_files(packet: ProofPacket) -> tuple[bytes, bytes]:
    return Path(packet.pdf_path).read_bytes(), Path(packet.json_path).read_bytes()


@pytest.mark.parametrize(("amount", "currency", "fee", "minor"), [("10.03", "USD", "2.01", 201), ("3", "JPY", "1", 1)])
def test_phase_seven_charges_the_fee_once_and_writes_a_verifiable_proof_packet(
    phase_env, sandbox, engine, tenant, database_url, amount, currency, fee, minor
):
    instance = dg.DagsterInstance.ephemeral()
    match = {
        "claim_id": "c7",
        "confidence": "0.9",
        "amount": amount,
        "currency": currency,
        "evidence_ids": ["inv-1", "bol-2"],
    }
    _accept(engine, tenant, 4, user_id="u7", sync_id="s7", matches=[match])
    _run(instance, database_url, _tick(instance, database_url)[0])
    body = {
        "user_id": "u7",
        "sync_id": "s7",
        "claim_id": "c7",
        "payout_id": "po-7",
        "amount": amount,
        "currency": currency,
    }
    first = _accept(engine, tenant, 7, **body)
    _run(instance, database_url, _tick(instance, database_url)[0])
    assert _state(engine, first).state == "done"
    with transaction(engine) as session:
        packet = session.scalars(select(ProofPacket).where(ProofPacket.user_id == "u7")).one()
    assert (packet.status, packet.fee_amount, packet.fee_minor, packet.currency) == ("ready", fee, minor, currency)
    pdf, twin = _packet_files(packet)
    digest = hashlib.sha256(twin).hexdigest()
    assert packet.json_sha256 == digest and pdf.startswith(b"%PDF") and digest.encode() in pdf
    document = json.loads(twin)
    assert document["fee"]["amount"] == fee and document["payout"]["amount"] == str(Decimal(amount))
    assert document["evidence"] == ["inv-1", "bol-2"] and document["claim"]["claim_id"] == "c7"
    assert document["fee"]["payment_intent_id"] == packet.payment_intent_id
    intents = sandbox.http.get("/_sandbox/payments/intents").json()
    assert [(i["amount"], i["currency"], i["id"]) for i in intents] == [
        (minor, currency.lower(), packet.payment_intent_id)
    ]
    assert _calls(sandbox, "/payments/v1/payment_intents")[0]["idempotency_key"] == packet.fee_idempotency_key
    # The same payout reported again: its completed trigger, nothing queued, no second charge.
    assert _accept(engine, tenant, 7, **body) == first
    assert _tick(instance, database_url) == []
    assert len(sandbox.http.get("/_sandbox/payments/intents").json()) == 1
    with transaction(engine) as session:
        assert len(session.scalars(select(ProofPacket).where(ProofPacket.user_id == "u7")).all()) == 1


def test_a_failing_row_goes_back_to_the_queue_alone_with_the_queues_backoff(
    phase_env, sandbox, engine, tenant, database_url
):
    instance = dg.DagsterInstance.ephemeral()
    ok_a = _accept(engine, tenant, 1, user_id="fa", sync_id="sa")
    ok_b = _accept(engine, tenant, 1, user_id="fb", sync_id="sb")
    bad = _accept(engine, tenant, 2, user_id="fc", sync_id="sc")
    sandbox.fault("POST", "/integrations/v1/detections", count=1000, status=503)
    (request,) = _tick(instance, database_url)
    counts = _run(instance, database_url, request)
    assert (counts["completed"], counts["failed"]) == (2, 1)
    assert _state(engine, ok_a).state == "done" and _state(engine, ok_b).state == "done"
    row = _state(engine, bad)
    assert (row.state, row.attempts) == ("available", 1) and "503" in row.last_error
    # the kind's backoff (10 s base, jitter down to half), measured on the row's own clock
    assert row.available_at - row.updated_at >= timedelta(seconds=5)
    (audit,) = _audit(engine, "fc")
    assert (audit.phase, audit.outcome, audit.attempt) == (2, "failed", 1) and "503" in audit.error
    assert [e.type for e in _events(engine, "fc")] == ["phase_started", "phase_failed"]
    assert _tick(instance, database_url) == []  # not due before its backoff
    sandbox.http.delete("/_sandbox/faults").raise_for_status()
    with transaction(engine) as session:  # the backoff has passed
        session.execute(update(TriggerQueue).where(TriggerQueue.id == bad).values(available_at=row.updated_at))
    (retry,) = _tick(instance, database_url)
    assert _run(instance, database_url, retry)["completed"] == 1
    assert _state(engine, bad).state == "done" and _state(engine, bad).attempts == 2
    assert [a.outcome for a in _audit(engine, "fc")] == ["failed", "completed"]
    with transaction(engine) as session:
        progress = session.scalars(select(SyncProgress).where(SyncProgress.user_id == "fc")).one()
        assert (progress.phase, progress.status) == (2, "completed")
        # /metrics' phase figures: the audit rows, folded into totals by the sweeper
        before_fold = phase_metrics.read(session)
    with transaction(engine) as session:
        assert phase_metrics.fold(session) == 4  # the four audit rows, into the totals
        assert phase_metrics.fold(session) == 0
        figures = phase_metrics.read(session)
    assert figures == before_fold  # a scrape adds the rows not folded yet: folding changes no figure
    assert figures.transitions == {(1, "completed"): 2, (2, "failed"): 1, (2, "completed"): 1}
    # counts of phase runs (observations), whatever each run took
    assert (figures.durations[1].count, figures.durations[2].count) == (2, 2)
    assert (figures.latencies[1].count, figures.latencies[2].count) == (2, 1)  # end to end: completed runs only


def test_progress_never_moves_backwards(engine, tenant):
    P = phases.P
    moves = [
        (1, P.RUNNING, True),
        (1, P.COMPLETED, True),
        (1, P.RUNNING, False),
        (3, P.RUNNING, True),
        (2, P.COMPLETED, False),
        (3, P.FAILED, True),
        (3, P.RUNNING, True),
        (3, P.COMPLETED, True),
        (7, P.COMPLETED, True),
        (6, P.RUNNING, False),
        (7, P.RUNNING, False),
    ]
    seen = []
    for phase, status, expected in moves:
        with transaction(engine) as session:
            moved = phases.advance_progress(
                session, tenant_id=tenant, user_id="p", sync_id="s", phase=phase, status=status
            )
            row = session.scalars(select(SyncProgress).where(SyncProgress.user_id == "p")).one()
            seen.append((row.phase, row.percent))
        assert moved is expected, (phase, status)
    assert seen == sorted(seen) and seen[-1] == (7, 100)
    assert row.completed_at is not None


def test_the_stores_progress_rule_is_progress_allowed_for_every_pair_of_states(engine, tenant):
    """advance_progress decides in SQL (one upsert); it must agree with progress_allowed everywhere."""
    states = [(phase, status) for phase in phases.PHASES for status in phases.P]
    syncs = {}
    with transaction(engine) as session:
        for n, (phase, status) in enumerate(states):
            for m in range(len(states)):
                key = f"s{n}-{m}"
                syncs[key] = (phase, status, states[m])
                phases.advance_progress(
                    session, tenant_id=tenant, user_id="rule", sync_id=key, phase=phase, status=status
                )
    with transaction(engine) as session:
        for key, (phase, status, (to_phase, to_status)) in syncs.items():
            moved = phases.advance_progress(
                session, tenant_id=tenant, user_id="rule", sync_id=key, phase=to_phase, status=to_status
            )
            allowed = phases.progress_allowed(phase, status, to_phase, to_status)
            assert moved is allowed, (phase, status, to_phase, to_status)


def test_one_phase_one_post_drives_the_chain_to_phase_seven(
    phase_env, sandbox, engine, tenant, database_url, monkeypatch
):
    from api.app import create_app

    other = _other_tenant(engine)
    api = ServerThread(create_app(get_settings(), engine))
    monkeypatch.setenv("PHASE_CALLBACK_URL", api.url)
    get_settings.cache_clear()
    api.start()
    try:
        sandbox.http.post(
            "/_sandbox/integrations/config", json={"callbacks_enabled": True, "delay_s": 0}
        ).raise_for_status()
        settings = get_settings()
        service = bearer(make_token(settings, tenants=[tenant], roles=["service"], sub="main-api"))
        http = httpx.Client(base_url=api.url, timeout=30)
        accepted = http.post(
            "/api/v1/workflow/phase/1", json={"user_id": "chain", "seller_id": "sel-1"}, headers=service
        )
        assert accepted.status_code == 202, accepted.text
        sync_id = accepted.json()["sync_id"]
        instance = dg.DagsterInstance.ephemeral()

        def step():
            for request in _tick(instance, database_url):
                _run(instance, database_url, request)
            view = http.get(f"/v1/users/chain/syncs/{sync_id}", headers=service).json()
            return view if all(v == "completed" for v in view["phases"].values()) else None

        view = until(step, lambda: http.get(f"/v1/users/chain/syncs/{sync_id}", headers=service).text)
    finally:
        api.stop()
    assert view["progress"]["phase"] == 7 and view["progress"]["percent"] == 100
    assert view["progress"]["status"] == "completed" and view["progress"]["completed_at"]
    assert {a["phase"] for a in view["audit"]} == set(range(1, 8))
    assert all(a["outcome"] == "completed" for a in view["audit"])
    (packet,) = view["proof_packets"]
    api2 = ServerThread(create_app(get_settings(), engine)).start()
    try:
        http = httpx.Client(base_url=api2.url, timeout=30)
        pdf = http.get(packet["href"], headers=service)
        twin = http.get(packet["href"], params={"format": "json"}, headers=service)
        foreign = http.get(packet["href"], headers=bearer(make_token(settings, tenants=[other], roles=["service"])))
    finally:
        api2.stop()
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    digest = hashlib.sha256(twin.content).hexdigest()
    assert pdf.headers["x-proof-json-sha256"] == digest and digest.encode() in pdf.content
    assert json.loads(twin.content)["fee"] == {**json.loads(twin.content)["fee"], "amount": "25.10", "currency": "USD"}
    assert foreign.status_code == 404
    events = _events(engine, "chain")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert {e.phase for e in events if e.type == "phase_completed"} == set(range(1, 8))
    assert any(e.type == "prompt" for e in events)


def _other_tenant(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def test_a_worker_that_failed_sends_the_triggers_it_held_back_with_backoff(
    phase_env, sandbox, engine, tenant, database_url
):
    """A worker killed mid-batch leaves its triggers launched; run monitoring fails its run, and the
    sensor's next tick (reconciliation) sends each back with the kind's backoff, finished ones left alone."""
    from orchestration_defs.phases import claim_more

    instance = dg.DagsterInstance.ephemeral()
    ids = [_accept(engine, tenant, 1, user_id=f"ns{i}", sync_id="s") for i in range(3)]
    run = instance.create_run_for_job(phase_worker, status=dg.DagsterRunStatus.STARTED)
    assert [r.trigger_id for r in claim_more(engine, 10, run.run_id)] == ids
    instance.report_run_failed(run, "run worker gone")  # what run monitoring does to a killed worker
    assert _tick(instance, database_url) == []  # reconciled; nothing due before the backoff
    for trigger_id in ids:
        row = _state(engine, trigger_id)
        assert (row.state, row.attempts, row.run_id) == ("available", 1, run.run_id)
        assert row.available_at - row.updated_at >= timedelta(seconds=5)
    with transaction(engine) as session:  # the backoff has passed: one new worker takes all three
        session.execute(update(TriggerQueue).where(TriggerQueue.id.in_(ids)).values(available_at=row.updated_at))
    (again,) = _tick(instance, database_url)
    assert _run(instance, database_url, again)["completed"] == 3
    assert all(_state(engine, i).state == "done" and _state(engine, i).attempts == 2 for i in ids)


def test_phase_four_submits_the_claim_of_a_user_whose_id_is_not_ascii(phase_env, sandbox, engine, tenant, database_url):
    """The submission's idempotency key holds the user's id: percent-encoded into the header, so the
    call is sent (it failed on every attempt) and a second user's key never equals the first's."""
    instance = dg.DagsterInstance.ephemeral()
    match = {"claim_id": "c-ü", "confidence": "0.9", "amount": "10.00", "currency": "USD", "evidence_ids": []}
    users = ["用户-七", "🦊-user"]
    triggers = [_accept(engine, tenant, 4, user_id=user, sync_id="s", matches=[match]) for user in users]
    (request,) = _tick(instance, database_url)
    _run(instance, database_url, request)
    assert [_state(engine, t).state for t in triggers] == ["done", "done"]
    submitted = sorted(c["idempotency_key"] for c in _calls(sandbox, "/integrations/v1/claims"))
    assert submitted == sorted(header_value(f"submit:{tenant}:{user}:c-ü") for user in users)

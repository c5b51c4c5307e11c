"""Workflow executions end to end in process: queue sensor -> RunRequest -> the job
`workflow_execution` -> the sandbox's six services over real HTTP, on both store backends."""

from __future__ import annotations

import dagster as dg
import httpx
from sqlalchemy import select

from domain.core.models import OutboundMessage
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.workflows import workflow_engine
from tests.orchestration_defs.workflow_helpers import (
    audit_moves,
    call,
    drive,
    new_workflow,
    publish,
    run_directly,
    run_request,
    start,
    state,
    steps,
    tick,
)


def effects(sandbox) -> dict:
    return httpx.get(f"{sandbox.url}/_sandbox/services/effects").json()


def configure(sandbox, **config) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/services/config", json=config).raise_for_status()


def test_a_workflow_runs_through_the_queue_sensor_and_the_job(wf_env, engine, database_url, instance, sandbox):
    body = {"account": {"$ref": "/input/account_id"}, "score": {"$ref": "/steps/score/output/value"}}
    tenant, workflow = new_workflow(
        engine,
        [
            call("score", "ml_service"),
            call("forecast", "forecasting", ["score"], body),
            publish("notify", ["forecast"]),
        ],
    )
    execution = start(engine, tenant, workflow, {"account_id": "acc-7"})
    assert state(engine, execution)["status"] == "queued"

    (request,) = tick(instance, database_url)
    assert request.tags["wrk/tenant_id"] == tenant
    assert request.tags["wrk/workflow_id"] == workflow
    assert request.tags["wrk/workflow_execution_id"] == execution
    assert run_request(instance, database_url, request).success
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    assert view["progress"] == {"total": 3, "done": 3, "failed": 0, "waiting": 0}
    by_name = steps(view)
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 for s in by_name.values())
    # the body was built from the input and the earlier step's output, by JSON pointers
    received = by_name["forecast"]["output"]["received"]
    assert received == {"account": "acc-7", "score": by_name["score"]["output"]["value"]}
    assert by_name["score"]["output"]["idempotency_key"] == f"{execution}:score"
    assert by_name["forecast"]["started_at"] >= by_name["score"]["finished_at"]
    # the publish step went through the batch-jobs outbox
    with transaction(engine) as session:
        message = session.scalars(select(OutboundMessage).where(OutboundMessage.queue == "workflow_results")).one()
    assert message.body == {"account": "acc-7"}
    assert message.message_id == by_name["notify"]["output"]["message_id"]
    assert message.headers["workflow_execution_id"] == execution
    # no RABBITMQ_URL: the outbox is the transport, the message is delivered there (nothing left pending)
    assert message.status == "published" and message.published_at == message.created_at
    # every move audited, forward only
    assert audit_moves(engine, execution) == [
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    # the run carries the execution's tags
    run = instance.get_runs(filters=dg.RunsFilter(tags={"wrk/workflow_execution_id": execution}))[0]
    assert run.tags["wrk/tenant_id"] == tenant and run.tags["wrk/workflow_id"] == workflow


def test_ready_steps_run_concurrently_bounded_by_the_setting(
    wf_env, engine, database_url, instance, sandbox, monkeypatch
):
    monkeypatch.setenv("WORKFLOW_MAX_PARALLEL_STEPS", "2")
    get_settings.cache_clear()
    configure(sandbox, latency_s=0.3)
    tenant, workflow = new_workflow(
        engine,
        [
            call("prepare"),
            call("b", "ml_service", ["prepare"]),
            call("c", "forecasting", ["prepare"]),
            call("d", "recommendations", ["prepare"]),
            call("join", "adaptive_learning", ["b", "c", "d"]),
        ],
    )
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    # b, c and d were ready together: two ran at once (the bound), never three
    assert effects(sandbox)["max_in_flight"] == 2
    by_name = steps(view)
    assert by_name["join"]["started_at"] >= max(by_name[n]["finished_at"] for n in "bcd")
    assert all(by_name[n]["started_at"] >= by_name["prepare"]["finished_at"] for n in "bcd")


def test_a_failing_service_is_retried_by_the_one_policy_then_fails_the_execution(
    wf_env, engine, database_url, instance, sandbox
):
    sandbox.fault("POST", "/services/ml_service/.*", count=100, status=503)
    tenant, workflow = new_workflow(
        engine, [call("prepare"), call("score", "ml_service", ["prepare"]), call("after", "forecasting", ["score"])]
    )
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    view = state(engine, execution)
    by_name = steps(view)
    assert view["status"] == "failed"
    assert "score" in view["error"]
    assert by_name["score"]["status"] == "failed"
    assert by_name["score"]["attempts"] == wf_env.retry_max_attempts
    assert "503" in by_name["score"]["error"]
    assert by_name["after"]["status"] == "skipped"
    assert by_name["prepare"]["status"] == "succeeded"
    assert len(sandbox.calls("POST", "/services/ml_service/.*")) == wf_env.retry_max_attempts
    assert sandbox.calls("POST", "/services/forecasting/.*") == []
    assert view["progress"] == {"total": 3, "done": 1, "failed": 1, "waiting": 0}


def test_a_transient_failure_is_retried_and_the_step_succeeds(wf_env, engine, database_url, instance, sandbox):
    sandbox.fault("POST", "/services/ml_service/.*", count=2, status=500)
    tenant, workflow = new_workflow(engine, [call("score", "ml_service")])
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    assert steps(view)["score"]["attempts"] == 3
    assert effects(sandbox)["effects"] == {f"ml_service:{execution}:score": 1}


def test_a_crash_between_the_call_and_its_record_resumes_without_doing_the_call_twice(
    wf_env, engine, database_url, instance, sandbox, monkeypatch
):
    tenant, workflow = new_workflow(
        engine, [call("prepare"), call("score", "ml_service", ["prepare"]), call("after", "forecasting", ["score"])]
    )
    execution = start(engine, tenant, workflow)
    real_record = workflow_engine._record

    def crash_on_score(session, done_call, result):
        if done_call.step == "score":
            raise RuntimeError("the process died after the call, before its result was saved")
        real_record(session, done_call, result)

    monkeypatch.setattr(workflow_engine, "_record", crash_on_score)
    result = run_directly(instance, database_url, execution, raise_on_error=False)
    assert not result.success
    view = state(engine, execution)
    assert view["status"] == "running"
    assert steps(view)["prepare"]["status"] == "succeeded"
    assert steps(view)["score"]["status"] == "running"  # the intent, saved before the call
    assert effects(sandbox)["effects"][f"ml_service:{execution}:score"] == 1

    monkeypatch.setattr(workflow_engine, "_record", real_record)
    assert run_directly(instance, database_url, execution).success  # a re-execution from the UI
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    # the finished step was not called again; the one in flight was sent again with its key and the
    # service answered with the first call's result instead of doing it twice
    assert len(sandbox.calls("POST", "/services/risk_analytics/v1/prepare")) == 1
    assert effects(sandbox)["arrivals"][f"ml_service:{execution}:score"] == 2  # sent again, done once
    assert len(sandbox.calls("POST", "/services/ml_service/.*")) == 2
    assert effects(sandbox)["effects"] == {
        f"risk_analytics:{execution}:prepare": 1,
        f"ml_service:{execution}:score": 1,
        f"forecasting:{execution}:after": 1,
    }
    assert steps(view)["score"]["attempts"] == 2

    # a finished execution's re-execution calls nothing
    before = len(sandbox.calls())
    assert run_directly(instance, database_url, execution).success
    assert len(sandbox.calls()) == before


def test_an_unresolvable_reference_fails_the_step_naming_it(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = new_workflow(engine, [call("score", body={"x": {"$ref": "/input/missing"}})])
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "failed"
    assert "/input/missing" in steps(view)["score"]["error"]
    assert sandbox.calls("POST", "/services/.*") == []


def test_two_overlapping_runs_of_one_execution_start_each_step_once(wf_env, engine, sandbox):
    """A decision's run can start while an earlier run is still finishing another branch."""
    from concurrent.futures import ThreadPoolExecutor

    from resources.services import Services

    configure(sandbox, latency_s=0.2)
    tenant, workflow = new_workflow(
        engine,
        [
            call("a"),
            call("b", "ml_service", ["a"]),
            call("c", "forecasting", ["a"]),
            call("d", "recommendations", ["b", "c"]),
        ],
    )
    execution = start(engine, tenant, workflow)
    services = Services()
    try:
        with ThreadPoolExecutor(2) as pool:
            ends = list(
                pool.map(
                    lambda n: workflow_engine.run(engine, execution, call=services.call, run_id=f"run-{n}"), [1, 2]
                )
            )
    finally:
        services.close()
    assert "succeeded" in ends
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    assert effects(sandbox)["effects"] == {
        f"risk_analytics:{execution}:a": 1,
        f"ml_service:{execution}:b": 1,
        f"forecasting:{execution}:c": 1,
        f"recommendations:{execution}:d": 1,
    }
    for step in view["steps"]:
        with transaction(engine) as session:
            from domain.core.models import AuditLog, WorkflowExecutionStep

            step_id = session.scalars(
                select(WorkflowExecutionStep.id).where(
                    WorkflowExecutionStep.workflow_execution_id == execution, WorkflowExecutionStep.name == step["name"]
                )
            ).one()
            moves = session.execute(
                select(AuditLog.previous_status, AuditLog.new_status).where(AuditLog.entity_id == step_id)
            ).all()
        assert sorted(tuple(m) for m in moves) == [("pending", "running"), ("running", "succeeded")], step["name"]


def test_a_run_failing_on_its_triggers_last_attempt_ends_the_execution_failed(
    wf_env, engine, database_url, instance, sandbox, monkeypatch
):
    from orchestration_defs.tags import TAG_ATTEMPT, TAG_KIND
    from orchestration_defs.workflows import workflow_execution
    from tests.orchestration_defs.workflow_helpers import resources

    tenant, workflow = new_workflow(engine, [call("a"), call("b", depends_on=["a"])])
    execution = start(engine, tenant, workflow)
    config = {"ops": {"run_workflow_execution": {"config": {"workflow_execution_id": execution}}}}

    def broken(*_args, **_kwargs):
        raise RuntimeError("engine broke")

    monkeypatch.setattr(workflow_engine, "run", broken)
    for attempt, expected in (("4", "queued"), ("5", "failed")):  # the workflow kind has 5 attempts
        result = workflow_execution.execute_in_process(
            run_config=config,
            instance=instance,
            resources=resources(database_url),
            tags={TAG_KIND: "workflow", TAG_ATTEMPT: attempt},
            raise_on_error=False,
        )
        assert not result.success
        assert state(engine, execution)["status"] == expected
    view = state(engine, execution)
    assert "engine broke" in view["error"]
    assert {s["status"] for s in view["steps"]} == {"skipped"}


def test_a_run_process_killed_during_a_call_is_resumed_without_doing_the_call_twice(
    wf_env, engine, database_url, sandbox
):
    """SIGKILL of a real process running the engine while its service call is in flight."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from resources.services import Services
    from tests.servers import until

    configure(sandbox, services={"ml_service": {"latency_s": 5.0}})  # room to kill it mid-call
    tenant, workflow = new_workflow(
        engine, [call("prepare"), call("score", "ml_service", ["prepare"]), call("after", depends_on=["score"])]
    )
    execution = start(engine, tenant, workflow)
    script = (
        "import sys; from domain.core.store import engine_for; from domain.workflows import workflow_engine; "
        "from resources.services import Services; "
        "workflow_engine.run(engine_for(sys.argv[1]), sys.argv[2], call=Services().call)"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", script, database_url, execution], cwd=root, env=dict(os.environ))
    try:
        key = f"ml_service:{execution}:score"

        def call_arrived() -> bool:
            assert proc.poll() is None, "the run ended before its call was made"
            return effects(sandbox)["arrivals"].get(key, 0) >= 1

        until(call_arrived, f"the call {key} to reach the service", interval=0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert steps(state(engine, execution))["score"]["status"] == "running"

    services = Services()
    try:
        assert workflow_engine.run(engine, execution, call=services.call) == "succeeded"
    finally:
        services.close()
    assert effects(sandbox)["effects"] == {
        f"risk_analytics:{execution}:prepare": 1,
        f"ml_service:{execution}:score": 1,
        f"risk_analytics:{execution}:after": 1,
    }
    assert len(sandbox.calls("POST", "/services/risk_analytics/v1/prepare")) == 1


def test_a_stored_step_whose_path_leaves_its_service_fails_without_calling_anything(
    wf_env, engine, database_url, instance, sandbox
):
    """A definition stored before paths were checked: the call is refused again at call time."""
    from domain.core.models import WorkflowStep

    tenant, workflow = new_workflow(engine, [call("score", "ml_service")])
    with transaction(engine) as session:
        step = session.scalars(select(WorkflowStep).where(WorkflowStep.name == "score")).one()
        step.config = {**step.config, "path": "/../../services/forecasting/escaped"}
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "failed"
    assert "dot segment" in steps(view)["score"]["error"]
    assert sandbox.calls("POST", "/services/.*") == []

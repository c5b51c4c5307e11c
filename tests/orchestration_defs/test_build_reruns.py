"""Build runs that come again: stale runs change nothing and say so; an errored
build completes on re-execution from failure with the same workflow; a UI launch needs only the version
id. Re-execution goes through Dagster's own API (`execute_job` with `ReexecutionOptions`)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

from domain import build, lifecycle, models
from domain.lifecycle import Actor, Status
from domain.store import transaction
from orchestration_defs.build import TAG_SKIPPED, build_automation_version
from tests.orchestration_defs.test_build import BLUEPRINT, CREATE, _job, _new_version, _resources, _run, _state


def _counts(engine) -> dict[str, int]:
    with transaction(engine) as session:
        return {
            "audit": session.scalar(select(func.count()).select_from(models.AuditLog)),
            "alerts": session.scalar(
                select(func.count()).select_from(models.Notification).where(models.Notification.template == "ops_alert")
            ),
        }


def _move(engine, version_id: str, *statuses: Status) -> None:
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, version_id)
        for status in statuses:
            lifecycle.transition(session, version, status, actor=Actor.user("ops-1"))


def _steps(result, event: str) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == event}


def _config(payload: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {"load": {"config": payload}}}


# -- item 8: a stale build run changes nothing ---------------------------------------------------------


def test_a_duplicate_run_for_a_live_version_changes_nothing_and_says_so(
    engine, database_url, sandbox, flow_env, instance
):
    payload = _new_version(engine)
    assert _run(payload, database_url, instance).success
    _move(engine, payload["automation_version_id"], Status.READY_TO_LAUNCH, Status.LIVE)
    before, calls = _counts(engine), len(sandbox.calls("POST", CREATE))
    again = _run(payload, database_url, instance)
    assert again.success
    state = _state(engine, payload)
    assert (state["version"], state["binding"], state["binding_error"]) == ("Live", "active", None)
    assert _counts(engine) == before  # no audit row, no alert
    assert len(sandbox.calls("POST", CREATE)) == calls
    reason = instance.get_run_by_id(again.run_id).tags[TAG_SKIPPED]
    assert "is Live" in reason and "changes nothing" in reason
    assert _steps(again, "STEP_SKIPPED") == {"create", "record", "notify"}


def test_a_ui_reexecution_of_an_old_build_leaves_a_live_version_alone(
    engine, database_url, sandbox, flow_env, instance
):
    payload = _new_version(engine)
    first = dg.execute_job(dg.reconstructable(_job), instance=instance, run_config=_config(payload))
    assert first.success
    _move(engine, payload["automation_version_id"], Status.READY_TO_LAUNCH, Status.LIVE)
    before = _counts(engine)
    for options in (
        dg.ReexecutionOptions(parent_run_id=first.run_id),  # "re-execute all"
        dg.ReexecutionOptions(parent_run_id=first.run_id, step_selection=["create*"]),  # from a step
    ):
        again = dg.execute_job(
            dg.reconstructable(_job), instance=instance, run_config=_config(payload), reexecution_options=options
        )
        assert again.success
        assert instance.get_run_by_id(again.run_id).tags[TAG_SKIPPED]
    state = _state(engine, payload)
    assert (state["version"], state["binding"]) == ("Live", "active")
    assert _counts(engine) == before
    assert len(sandbox.calls("POST", CREATE)) == 1


def test_a_forged_trigger_does_not_break_a_built_binding(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    assert _run(payload, database_url, instance).success
    _move(engine, payload["automation_version_id"], Status.READY_TO_LAUNCH, Status.LIVE)
    with transaction(engine) as session:
        from tests.domain import factories

        other = factories.tenant(session).id
    forged = _run({**payload, "tenant_id": other}, database_url, instance)
    assert not forged.success  # a tenant mismatch is still rejected and alerted...
    state = _state(engine, payload)
    assert (state["version"], state["binding"]) == ("Live", "active")  # ...but the Live binding stays active


# -- item 9: re-execution from failure completes an errored build ---------------------------------------


def _reexecute_from_failure(parent_run_id: str, payload, instance):
    return dg.execute_job(
        dg.reconstructable(_job),
        instance=instance,
        run_config=_config(payload),
        reexecution_options=dg.ReexecutionOptions.from_failure(parent_run_id, instance),
    )


def test_reexecution_after_four_5xx_completes_the_build_with_the_same_workflow(
    engine, database_url, sandbox, flow_env, instance
):
    payload = _new_version(engine)
    sandbox.fault("POST", CREATE, count=4, status=503)
    first = dg.execute_job(dg.reconstructable(_job), instance=instance, run_config=_config(payload))
    assert not first.success
    assert (_state(engine, payload)["version"], _state(engine, payload)["binding"]) == ("Error", "error")
    # the platform had in fact created the workflow behind one of the 503s: the binding id finds it again
    landed = sandbox.http.post(
        CREATE,
        json={"name": "Invoices v1", "blueprint": BLUEPRINT, "tenant_id": payload["tenant_id"]},
        headers={"Idempotency-Key": payload["workflow_binding_id"], "Authorization": "Bearer sandbox-token"},
    ).json()
    again = _reexecute_from_failure(first.run_id, payload, instance)
    assert again.success
    state = _state(engine, payload)
    assert (state["version"], state["project"], state["binding"]) == ("QA & Testing", "QA & Testing", "active")
    assert state["workflow_id"] == landed["id"] and state["binding_error"] is None
    assert len(sandbox.http.get("/_sandbox/wrk/workflows").json()) == 1
    assert state["audit"][-3:] == ["build_resumed", "status_change", "build_complete"]
    assert _steps(again, "STEP_SUCCESS") == {"create", "record", "notify"}  # `load` reused from the parent


def test_reexecution_after_a_422_and_a_fixed_blueprint_completes_the_build(
    engine, database_url, sandbox, flow_env, instance
):
    payload = _new_version(engine, {"steps": [{"id": "a", "type": "x"}, {"id": "a", "type": "y"}]})
    first = dg.execute_job(dg.reconstructable(_job), instance=instance, run_config=_config(payload))
    assert not first.success and _state(engine, payload)["version"] == "Error"
    with transaction(engine) as session:  # ops fix the blueprint, then re-execute from failure
        session.get(models.AutomationVersion, payload["automation_version_id"]).blueprint = BLUEPRINT
    again = _reexecute_from_failure(first.run_id, payload, instance)
    assert again.success
    state = _state(engine, payload)
    assert (state["version"], state["binding"]) == ("QA & Testing", "active")
    assert [c["status"] for c in sandbox.calls("POST", CREATE)] == [422, 201]


def test_a_new_build_request_of_an_errored_build_reuses_its_binding(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    sandbox.fault("POST", CREATE, count=4, status=500)
    assert not _run(payload, database_url, instance).success
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, payload["automation_version_id"])
        session.execute(
            models.TriggerQueue.__table__.update()
            .where(models.TriggerQueue.dedup_key == f"build:{version.id}")
            .values(state="dead", claim_token=None)
        )
        trigger_id = build.request_build(session, version, Actor.user("ops-1"))
        again = dict(session.get(models.TriggerQueue, trigger_id).payload)
    assert again["workflow_binding_id"] == payload["workflow_binding_id"]
    assert _run(again, database_url, instance).success
    assert _state(engine, payload)["version"] == "QA & Testing"
    assert len(sandbox.http.get("/_sandbox/wrk/workflows").json()) == 1


# -- item 10: a UI launch needs only the version id -----------------------------------------------------


def _ui_launch(version_id: str, database_url, instance, **extra: str):
    return build_automation_version.execute_in_process(
        run_config=_config({"automation_version_id": version_id, **extra}),
        instance=instance,
        resources=_resources(database_url),
        raise_on_error=False,
    )


def _draft(engine) -> dict[str, str]:
    """A Draft version with no binding and no trigger: what the UI sees before any API request."""
    payload = _new_version(engine)
    with transaction(engine) as session:
        session.execute(models.TriggerQueue.__table__.delete())
        session.execute(models.AuditLog.__table__.delete())
        binding = session.get(models.WorkflowBinding, payload["workflow_binding_id"])
        session.delete(binding)
        version = session.get(models.AutomationVersion, payload["automation_version_id"])
        session.flush()
        # back to Draft as a person would (Build in Progress -> Draft is a lifecycle move)
        lifecycle.transition(session, version, Status.DRAFT, actor=Actor.user("ops-1"))
        session.flush()
        session.execute(models.AuditLog.__table__.delete())
    return payload


def test_a_ui_launch_with_only_the_version_id_builds_a_draft_version(engine, database_url, sandbox, flow_env, instance):
    payload = _draft(engine)
    result = _ui_launch(payload["automation_version_id"], database_url, instance)
    assert result.success
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, payload["automation_version_id"])
        binding = session.scalars(
            select(models.WorkflowBinding).where(models.WorkflowBinding.automation_version_id == version.id)
        ).one()
        audit = session.execute(
            select(models.AuditLog.entity_type, models.AuditLog.action, models.AuditLog.actor_id)
            .where(models.AuditLog.entity_type == "automation_versions")
            .order_by(models.AuditLog.id)
        ).all()
        queued = session.scalar(select(func.count()).select_from(models.TriggerQueue))
        assert (version.status, binding.status) == ("QA & Testing", "active")
    assert [tuple(a) for a in audit] == [
        ("automation_versions", "build_requested", "dagster_ui"),
        ("automation_versions", "status_change", "build_worker"),
        ("automation_versions", "build_complete", "build_worker"),
    ]
    assert queued == 0  # the run is the build
    [call] = sandbox.calls("POST", CREATE)
    assert call["idempotency_key"] == binding.id


@pytest.mark.parametrize("case", ["live", "missing", "other_tenant"])
def test_a_ui_launch_that_cannot_build_is_refused_before_any_write(
    engine, database_url, sandbox, flow_env, instance, case
):
    payload = _new_version(engine)
    assert _run(payload, database_url, instance).success
    _move(engine, payload["automation_version_id"], Status.READY_TO_LAUNCH, Status.LIVE)
    before = _counts(engine)
    version_id = "no-such-version" if case == "missing" else payload["automation_version_id"]
    extra = {"tenant_id": "another-tenant"} if case == "other_tenant" else {}
    result = _ui_launch(version_id, database_url, instance, **extra)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    expected = "is Live" if case == "live" else "not found"
    assert expected in message and "POST /v1/automation-versions/{id}/build" in message
    assert _counts(engine) == before  # no audit row, no alert
    assert _state(engine, payload)["version"] == "Live"

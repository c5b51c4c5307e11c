"""Flow 22 end to end in process: build requests through the job, over the sandbox's HTTP."""

from typing import Any

import dagster as dg
from sqlalchemy import select

from domain.build import build
from domain.core import models
from domain.core.lifecycle import Actor
from domain.core.settings import get_settings
from domain.core.store import transaction
from orchestration_defs.build import build_automation_version
from orchestration_defs.housekeeping import deliver_notifications
from orchestration_defs.tags import TAG_RETRYABLE
from resources.dagster_resources import DatabaseResource, NotificationsResource, WrkPlatformResource
from tests.domain import factories

BLUEPRINT = {"steps": [{"id": "fetch", "type": "http"}, {"id": "store", "type": "db", "depends_on": ["fetch"]}]}
CREATE = "/wrk-api/workflows"


def _resources(database_url: str) -> dict[str, Any]:
    return {
        "database": DatabaseResource(url=database_url),
        "wrk": WrkPlatformResource(),
        "notifications": NotificationsResource(),
    }


def _new_version(engine, blueprint=BLUEPRINT) -> dict[str, str]:
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        owner = models.User(email=f"owner-{tenant.id[:8]}@client.test", name="Owner")
        session.add(owner)
        session.flush()
        project = models.Project(
            tenant_id=tenant.id, name="Invoices", owner_user_id=owner.id, client_email="client@client.test"
        )
        session.add(project)
        session.flush()
        version = models.AutomationVersion(
            tenant_id=tenant.id, project_id=project.id, version_number=1, blueprint=blueprint
        )
        session.add(version)
        session.flush()
        session.add(
            models.Task(tenant_id=tenant.id, automation_version_id=version.id, kind="integration", title="connect")
        )
        trigger_id = build.request_build(session, version, Actor.user("ops-1"))
        payload = dict(session.get(models.TriggerQueue, trigger_id).payload)
    return payload


def _run(payload, database_url, instance, raise_on_error=False):
    config = {"ops": {"load": {"config": payload}}}
    return build_automation_version.execute_in_process(
        run_config=config, instance=instance, resources=_resources(database_url), raise_on_error=raise_on_error
    )


def _state(engine, payload) -> dict[str, Any]:
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, payload["automation_version_id"])
        binding = session.get(models.WorkflowBinding, payload["workflow_binding_id"])
        project = session.get(models.Project, payload["project_id"])
        audit = session.scalars(
            select(models.AuditLog.action).where(models.AuditLog.entity_id == version.id).order_by(models.AuditLog.id)
        ).all()
        tasks = session.scalars(select(models.Task.status).where(models.Task.automation_version_id == version.id)).all()
        outbox = session.execute(
            select(models.Notification.channel, models.Notification.template, models.Notification.recipient).order_by(
                models.Notification.template
            )
        ).all()
        return {
            "version": version.status,
            "project": project.status,
            "binding": binding.status,
            "binding_error": binding.error,
            "workflow_id": binding.wrk_workflow_id,
            "workflow_url": binding.wrk_workflow_url,
            "audit": list(audit),
            "tasks": list(tasks),
            "outbox": [tuple(r) for r in outbox],
        }


def test_build_creates_the_workflow_records_it_and_notifies(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    result = _run(payload, database_url, instance, raise_on_error=True)
    assert result.success
    state = _state(engine, payload)
    assert state["version"] == "QA & Testing" and state["project"] == "QA & Testing"
    assert state["binding"] == "active" and state["workflow_id"].startswith("wf_")
    assert state["audit"] == ["build_requested", "status_change", "build_complete"]
    assert state["tasks"] == ["complete"]
    with transaction(engine) as session:
        owner_id = session.get(models.Project, payload["project_id"]).owner_user_id
    assert owner_id
    assert state["outbox"] == [
        ("email", "build_complete", "client@client.test"),
        ("email", "qa_ready", "ops@wrk.test"),
        ("in_app", "qa_ready", owner_id),  # the project's owner
    ]
    [call] = sandbox.calls("POST", CREATE)
    assert call["idempotency_key"] == payload["workflow_binding_id"]
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == "create"]
    assert output.event_specific_data.metadata["workflow_url"].value == state["workflow_url"]
    # delivery: the two e-mails reach the SMTP sink
    assert deliver_notifications.execute_in_process(instance=instance, resources=_resources(database_url)).success
    assert sorted(m["to"][0] for m in sandbox.mail()) == ["client@client.test", "ops@wrk.test"]


def _assert_rejected(engine, payload, result, instance, reason, version_status="Error"):
    assert not result.success
    state = _state(engine, payload)
    assert state["binding"] == "error" and state["binding_error"]["reason"] == reason
    assert state["version"] == version_status
    assert ("email", "ops_alert", "ops@wrk.test") in state["outbox"]
    assert instance.get_run_by_id(result.run_id).tags[TAG_RETRYABLE] == "false"
    return state


def test_platform_validation_failure_is_one_call_and_not_retried(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine, {"steps": [{"id": "a", "type": "x"}, {"id": "a", "type": "y"}]})
    state = _assert_rejected(engine, payload, _run(payload, database_url, instance), instance, "blueprint_rejected")
    assert state["binding_error"]["details"]["details"][0]["message"] == "duplicate step id 'a'"
    assert len(sandbox.calls("POST", CREATE)) == 1


def test_invalid_blueprint_structure_is_refused_before_any_call(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine, {"steps": []})
    _assert_rejected(engine, payload, _run(payload, database_url, instance), instance, "invalid_blueprint")
    assert sandbox.calls("POST", CREATE) == []


def test_5xx_three_times_then_success_is_four_calls(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    sandbox.fault("POST", CREATE, count=3, status=502)
    assert _run(payload, database_url, instance).success
    assert [c["status"] for c in sandbox.calls("POST", CREATE)] == [502, 502, 502, 201]
    assert _state(engine, payload)["version"] == "QA & Testing"


def test_5xx_until_retries_run_out_marks_the_binding_error(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    sandbox.fault("POST", CREATE, count=10, status=500)
    _assert_rejected(engine, payload, _run(payload, database_url, instance), instance, "platform_unavailable")
    assert len(sandbox.calls("POST", CREATE)) == 4


def test_a_timeout_is_retried(engine, database_url, sandbox, flow_env, instance, monkeypatch):
    monkeypatch.setenv("HTTP_READ_TIMEOUT_S", "0.5")  # the sandbox holds the first call 2 s
    get_settings.cache_clear()
    payload = _new_version(engine)
    sandbox.fault("POST", CREATE, count=1, action="timeout", delay_s=2.0)
    assert _run(payload, database_url, instance).success
    assert len(sandbox.calls("POST", CREATE)) == 2
    assert len(sandbox.http.get("/_sandbox/wrk/workflows").json()) == 1  # the timed-out call made none


def test_tenant_mismatch_stops_without_a_platform_call(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    with transaction(engine) as session:
        other = factories.tenant(session).id
    forged = {**payload, "tenant_id": other}
    result = _run(forged, database_url, instance)
    assert not result.success and sandbox.calls("POST", CREATE) == []
    state = _state(engine, payload)
    assert state["binding"] == "error" and state["binding_error"]["reason"] == "tenant_mismatch"
    assert state["version"] == "Build in Progress"  # a forged message does not move the version


def test_lookup_failure_stops_without_a_platform_call(engine, database_url, sandbox, flow_env, instance):
    payload = _new_version(engine)
    result = _run({**payload, "workflow_binding_id": "missing"}, database_url, instance)
    assert not result.success and sandbox.calls("POST", CREATE) == []
    with transaction(engine) as session:
        alerts = session.scalars(
            select(models.Notification.payload).where(models.Notification.template == "ops_alert")
        ).all()
    assert len(alerts) == 1 and "lookup_failed" in alerts[0]["summary"]


def test_crash_between_create_and_record_then_reexecution_makes_one_workflow(
    engine, database_url, sandbox, flow_env, instance, monkeypatch
):
    payload = _new_version(engine)
    real = build.record_build

    def crash(*_args, **_kwargs):
        raise RuntimeError("process died before recording")

    monkeypatch.setattr(build, "record_build", crash)
    config = {"ops": {"load": {"config": payload}}}
    first = dg.execute_job(dg.reconstructable(_job), instance=instance, run_config=config)
    assert not first.success
    assert _state(engine, payload)["version"] == "Build in Progress"
    monkeypatch.setattr(build, "record_build", real)
    again = dg.execute_job(
        dg.reconstructable(_job),
        instance=instance,
        run_config=config,
        reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
    )
    assert again.success
    assert len(sandbox.http.get("/_sandbox/wrk/workflows").json()) == 1
    assert len(sandbox.calls("POST", CREATE)) == 1  # `create` succeeded before: not run again
    assert _state(engine, payload)["version"] == "QA & Testing"


def _job():
    """The build job as the code location binds it (resources from the settings), reconstructable."""
    from orchestration_defs.definitions import defs

    return defs.get_job_def("build_automation_version")

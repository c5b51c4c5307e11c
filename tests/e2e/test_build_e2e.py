"""The running stack (sandbox, Dagster webserver and daemon), driven the way the Dagster UI drives it:
DagsterGraphQLClient launches build_automation_version, follows the run, and re-executes a failed run
from failure. Runs on PostgreSQL, the production store; SQLite is covered in process."""

import time

import httpx
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import text

from domain import build, models, queue
from domain.lifecycle import Actor
from domain.store import transaction
from tests.domain import factories
from tests.e2e.conftest import REEXECUTE


def _version_to_build(engine) -> dict:
    """A version in Build in Progress with its binding, as a build request leaves it; the queued trigger
    is cancelled so that only the launches below run it (the UI's way, not the sensor's)."""
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        project = factories.project(session, tenant.id)
        version = models.AutomationVersion(
            tenant_id=tenant.id,
            project_id=project.id,
            version_number=1,
            blueprint={"steps": [{"id": "a", "type": "http"}]},
        )
        session.add(version)
        session.flush()
        trigger_id = build.request_build(session, version, Actor.user("ops-e2e"))
        payload = dict(session.get(models.TriggerQueue, trigger_id).payload)
        queue.cancel(session, trigger_id)
    return payload


def _wait(client: DagsterGraphQLClient, run_id: str, timeout: float = 900) -> DagsterRunStatus:
    # A hang guard only (a dead daemon never finishes the run), far beyond any slow machine's run time.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            return status
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish")


def _config(payload: dict) -> dict:
    return {"ops": {"load": {"config": payload}}}


def test_launch_follow_and_reexecute_from_failure_through_graphql(stack, engine):
    client = stack["graphql"]
    ok = _version_to_build(engine)
    run_id = client.submit_job_execution("build_automation_version", run_config=_config(ok))
    assert _wait(client, run_id) == DagsterRunStatus.SUCCESS
    with transaction(engine) as session:
        assert session.get(models.AutomationVersion, ok["automation_version_id"]).status == "QA & Testing"

    # A failure after the workflow exists: the store refuses the version's update while a trigger is in place.
    crashing = _version_to_build(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION e2e_refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'e2e: store unavailable'; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER e2e_refuse BEFORE UPDATE ON automation_versions "
                "FOR EACH ROW EXECUTE FUNCTION e2e_refuse()"
            )
        )
    failed = client.submit_job_execution("build_automation_version", run_config=_config(crashing))
    assert _wait(client, failed) == DagsterRunStatus.FAILURE
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER e2e_refuse ON automation_versions"))
    result = client._execute(REEXECUTE, {"parentRunId": failed})["launchRunReexecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    assert _wait(client, result["run"]["runId"]) == DagsterRunStatus.SUCCESS
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, crashing["automation_version_id"])
        binding = session.get(models.WorkflowBinding, crashing["workflow_binding_id"])
    assert version.status == "QA & Testing" and binding.status == "active"
    workflows = httpx.get(f"{stack['sandbox_url']}/_sandbox/wrk/workflows").json()
    assert [w["id"] for w in workflows].count(binding.wrk_workflow_id) == 1
    assert len(workflows) == 2  # one per version: the re-execution made no second workflow


def test_an_errored_build_completes_on_reexecution_and_a_ui_launch_needs_only_the_version_id(stack, engine):
    """Through the webserver and the daemon: four 5xx make the version
    `Error`; re-executing from failure completes it with one workflow. A launch with only the version
    id of a Draft version builds it."""
    client = stack["graphql"]
    errored = _version_to_build(engine)
    fault = {"method": "POST", "path": "/wrk-api/workflows", "count": 4, "action": "error", "status": 503}
    httpx.post(f"{stack['sandbox_url']}/_sandbox/faults", json=fault).raise_for_status()
    failed = client.submit_job_execution("build_automation_version", run_config=_config(errored))
    assert _wait(client, failed) == DagsterRunStatus.FAILURE
    with transaction(engine) as session:
        assert session.get(models.AutomationVersion, errored["automation_version_id"]).status == "Error"
    result = client._execute(REEXECUTE, {"parentRunId": failed})["launchRunReexecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    assert _wait(client, result["run"]["runId"]) == DagsterRunStatus.SUCCESS
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, errored["automation_version_id"])
        binding = session.get(models.WorkflowBinding, errored["workflow_binding_id"])
        assert (version.status, binding.status) == ("QA & Testing", "active")
        workflow_id = binding.wrk_workflow_id
    workflows = httpx.get(f"{stack['sandbox_url']}/_sandbox/wrk/workflows").json()
    assert [w["id"] for w in workflows] == [workflow_id]

    with transaction(engine) as session:
        project = factories.project(session, factories.tenant(session).id)
        draft = models.AutomationVersion(
            tenant_id=project.tenant_id,
            project_id=project.id,
            version_number=1,
            blueprint={"steps": [{"id": "a", "type": "http"}]},
        )
        session.add(draft)
        session.flush()
        draft_id = draft.id
    launched = client.submit_job_execution(
        "build_automation_version", run_config=_config({"automation_version_id": draft_id})
    )
    assert _wait(client, launched) == DagsterRunStatus.SUCCESS
    with transaction(engine) as session:
        assert session.get(models.AutomationVersion, draft_id).status == "QA & Testing"

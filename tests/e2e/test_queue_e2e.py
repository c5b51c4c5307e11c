"""The queue and the flows' concurrency through a real dagster-daemon and webserver (the UI's GraphQL):
a requeued dead trigger runs at once under a new run key and ends done with its new run; two launches
of a build for the same automation version run one after the other. On PostgreSQL, the production store."""

import time

from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import text, update

from domain.build import build
from domain.core import models
from domain.core.lifecycle import Actor
from domain.core.store import transaction
from domain.queue import queue
from tests.domain import factories
from tests.servers import until

FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status startTime endTime tags { key value } }
  }
}
"""


def _version(session) -> models.AutomationVersion:
    tenant = factories.tenant(session)
    project = factories.project(session, tenant.id)
    version = models.AutomationVersion(
        tenant_id=tenant.id, project_id=project.id, version_number=1, blueprint={"steps": [{"id": "a", "type": "http"}]}
    )
    session.add(version)
    session.flush()
    return version


def _row(engine, row_id) -> models.TriggerQueue:
    with transaction(engine) as session:
        return session.get(models.TriggerQueue, row_id)


def _run(client: DagsterGraphQLClient, run_id: str) -> dict:
    return client._execute(RUN, {"runId": run_id})["runOrError"]


def _refuse_version_updates(engine, on: bool) -> None:
    with engine.begin() as conn:
        if on:
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION e2e_refuse() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.status = 'QA & Testing' THEN RAISE EXCEPTION 'e2e: store refuses'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER e2e_refuse BEFORE UPDATE ON automation_versions "
                    "FOR EACH ROW EXECUTE FUNCTION e2e_refuse()"
                )
            )
        else:
            conn.execute(text("DROP TRIGGER e2e_refuse ON automation_versions"))


def test_a_requeued_dead_trigger_runs_at_once_and_ends_done_with_its_new_run(stack, engine):
    client = stack["graphql"]
    _refuse_version_updates(engine, True)  # every build run fails in `record` (QA & Testing is refused)
    with transaction(engine) as session:
        version = _version(session)
        row_id = build.request_build(session, version, Actor.user("ops-e2e"))
        # one attempt, so the first failure kills the trigger (the kind's backoff is not under test here)
        session.execute(update(models.TriggerQueue).where(models.TriggerQueue.id == row_id).values(max_attempts=1))
        version_id = version.id
    dead = until(lambda: (r := _row(engine, row_id)).state == "dead" and r, lambda: _row(engine, row_id).state)
    first_run = dead.run_id
    assert first_run and first_run in dead.last_error
    assert _run(client, first_run)["status"] == "FAILURE"

    _refuse_version_updates(engine, False)  # the cause is fixed; ops requeue the trigger
    with transaction(engine) as session:
        assert queue.requeue(session, row_id)
    requeued_at = time.monotonic()
    done = until(
        lambda: (r := _row(engine, row_id)).state == "done" and r,
        lambda: f"{_row(engine, row_id).state}; daemon log: {stack['log'].read_text()[-2000:]}",
    )
    print(f"requeue -> done: {time.monotonic() - requeued_at:.1f} s")  # a figure, not a bound (-s shows it)
    assert done.run_id and done.run_id != first_run  # the run that fulfilled it, not the failed one
    assert _run(client, done.run_id)["status"] == "SUCCESS"
    with transaction(engine) as session:
        assert session.get(models.AutomationVersion, version_id).status == "QA & Testing"


def test_two_launches_of_one_versions_build_run_one_after_the_other(stack, engine):
    client, sandbox = stack["graphql"], stack["sandbox"]
    with transaction(engine) as session:
        version = _version(session)
        trigger_id = build.request_build(session, version, Actor.user("ops-e2e"))
        payload = dict(session.get(models.TriggerQueue, trigger_id).payload)
        queue.cancel(session, trigger_id)  # only the two UI launches below run it
    sandbox.fault("POST", "/wrk-api/workflows", count=1, action="delay", delay_s=4)  # the first run takes a while
    config = {"ops": {"load": {"config": payload}, "create": {"config": payload}}}
    first = client.submit_job_execution("build_automation_version", run_config=config)
    second = client.submit_job_execution("build_automation_version", run_config=config)
    runs = {
        run_id: until(
            lambda run_id=run_id: (r := _run(client, run_id))["status"] in {s.value for s in FINISHED} and r,
            f"run {run_id} did not finish",
        )
        for run_id in (first, second)
    }
    assert [runs[r]["status"] for r in (first, second)] == ["SUCCESS", "SUCCESS"]
    assert {"key": "wrk/automation_version_id", "value": version.id} in runs[second]["tags"]
    earlier, later = sorted(runs.values(), key=lambda r: r["startTime"])
    assert later["startTime"] >= earlier["endTime"]  # never both at once
    print(f"second run waited {later['startTime'] - earlier['startTime']:.1f} s after the first started")
    with transaction(engine) as session:
        assert session.get(models.AutomationVersion, version.id).status == "QA & Testing"
    assert len(sandbox.calls("POST", "/wrk-api/workflows")) == 1  # the second found it built

"""Per-tenant run limits through a real dagster-daemon: a burst of builds from one tenant and one build from
a second; with TENANT_MAX_CONCURRENT_RUNS=1 the first tenant's runs go one at a time, and the second
tenant's run starts while the first tenant's later runs are still queued. On PostgreSQL, the production
store; the queue sensors launch every run, as in production."""

import itertools

import pytest
from dagster_graphql import DagsterGraphQLClient

from domain.build import build
from domain.core import models
from domain.core.lifecycle import Actor, Status
from domain.core.store import transaction
from tests.domain import factories
from tests.e2e.conftest import REEXECUTE
from tests.servers import until

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status creationTime startTime endTime tags { key value } }
  }
}
"""
BURST = 4


@pytest.fixture
def one_run_per_tenant(monkeypatch):
    """The daemon's run coordinator reads TENANT_MAX_CONCURRENT_RUNS (requested before `stack`)."""
    monkeypatch.setenv("TENANT_MAX_CONCURRENT_RUNS", "1")


def _versions(session, count: int) -> list[models.AutomationVersion]:
    tenant = factories.tenant(session)
    project = factories.project(session, tenant.id)
    versions = [
        models.AutomationVersion(
            tenant_id=tenant.id,
            project_id=project.id,
            version_number=n + 1,
            blueprint={"steps": [{"id": "a", "type": "http"}]},
        )
        for n in range(count)
    ]
    session.add_all(versions)
    session.flush()
    return versions


def _run(client: DagsterGraphQLClient, run_id: str) -> dict:
    run = client._execute(RUN, {"runId": run_id})["runOrError"]
    run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return run


def _done_runs(engine, row_ids: list[int]) -> list[str] | None:
    with transaction(engine) as session:
        rows = [session.get(models.TriggerQueue, row_id) for row_id in row_ids]
        return [r.run_id for r in rows] if all(r.state == "done" for r in rows) else None


def test_a_second_tenants_run_starts_while_the_first_tenants_burst_waits_queued(one_run_per_tenant, stack, engine):
    client, sandbox = stack["graphql"], stack["sandbox"]
    # Each of the burst's builds takes a while on the platform, so its tenant's next run has to wait.
    sandbox.fault("POST", "/wrk-api/workflows", count=BURST + 1, action="delay", delay_s=2)
    with transaction(engine) as session:
        burst = _versions(session, BURST)
        (other,) = _versions(session, 1)
        # the burst first, then the other tenant's trigger: the queue hands them out in this order
        burst_rows = [build.request_build(session, v, Actor.user("ops-e2e")) for v in burst]
        other_row = build.request_build(session, other, Actor.user("ops-e2e"))
        busy_tenant, other_tenant = burst[0].tenant_id, other.tenant_id
    run_ids = until(
        lambda: _done_runs(engine, [*burst_rows, other_row]),
        lambda: f"not all done; daemon log: {stack['log'].read_text()[-3000:]}",
    )
    runs = [_run(client, run_id) for run_id in run_ids]
    assert [r["status"] for r in runs] == ["SUCCESS"] * (BURST + 1)
    burst_runs, other_run = runs[:BURST], runs[BURST]
    assert all(r["tags"]["wrk/tenant_id"] == busy_tenant and r["tags"]["wrk/flow"] == "build" for r in burst_runs)
    assert other_run["tags"]["wrk/tenant_id"] == other_tenant

    # The busy tenant's runs never overlapped: one at a time (TENANT_MAX_CONCURRENT_RUNS=1).
    in_order = sorted(burst_runs, key=lambda r: r["startTime"])
    for earlier, later in itertools.pairwise(in_order):
        assert later["startTime"] >= earlier["endTime"]
    # The other tenant's run started while runs of the burst, all created before it started, had not:
    # they were waiting in the queue, and it did not wait for them.
    assert all(r["creationTime"] <= other_run["startTime"] for r in burst_runs)
    waiting = [r for r in burst_runs if r["startTime"] > other_run["startTime"]]
    assert len(waiting) >= 2, [(r["startTime"], r["endTime"]) for r in in_order] + [other_run["startTime"]]
    # Figures, not bounds (-s shows them).
    last = in_order[-1]
    print(
        f"other tenant's run started with {len(waiting)} of the burst's {BURST} runs still queued; "
        f"it waited {other_run['startTime'] - other_run['creationTime']:.1f} s from creation to start, "
        f"the burst's last run {last['startTime'] - last['creationTime']:.1f} s"
    )


def test_a_ui_launch_naming_only_the_version_is_queued_with_its_tenant_from_the_store(stack, engine):
    """The tag is the run coordinator's, at submit time: this launch is refused inside its first op (the
    version is not buildable), before the op could tag the run itself."""
    client = stack["graphql"]
    with transaction(engine) as session:
        (version,) = _versions(session, 1)
        factories.put_in_status(session, version, Status.QA_AND_TESTING)
        version_id, tenant_id = version.id, version.tenant_id
    run_id = client.submit_job_execution(
        "build_automation_version", run_config={"ops": {"load": {"config": {"automation_version_id": version_id}}}}
    )
    run = until(
        lambda: (r := _run(client, run_id))["status"] in ("SUCCESS", "FAILURE", "CANCELED") and r,
        lambda: f"run {run_id} did not finish; daemon log: {stack['log'].read_text()[-3000:]}",
    )
    assert run["status"] == "FAILURE"  # refused: nothing to build
    assert run["tags"]["wrk/tenant_id"] == tenant_id and run["tags"]["wrk/flow"] == "build"
    assert "wrk/project_id" not in run["tags"]  # the op's own tagging never ran
    # A re-execution from the UI is submitted through the same coordinator, and counts the same way.
    again = client._execute(REEXECUTE, {"parentRunId": run_id})["launchRunReexecution"]
    assert again["__typename"] == "LaunchRunSuccess", again
    rerun = until(
        lambda: (r := _run(client, again["run"]["runId"]))["status"] in ("SUCCESS", "FAILURE", "CANCELED") and r,
        "the re-execution did not finish",
    )
    assert rerun["tags"]["wrk/tenant_id"] == tenant_id and rerun["tags"]["wrk/flow"] == "build"

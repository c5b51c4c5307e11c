"""Deploy: what a deploy costs the store and the platform, counted rather than timed (speed
is bench/deploy.py's). Three transactions per deploy; the platform client's connection is reused
from one deploy to the next; the answer is the one the commit wrote."""

from __future__ import annotations

from sqlalchemy import event

from tests.api.test_deploy import _binding, _ids, _patch, _workflow_active, client, settings  # noqa: F401


def test_a_deploy_commits_three_times_and_reuses_the_platform_connection(client, settings, demo, engine, sandbox):  # noqa: F811
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    first, second = candidates[0]["id"], candidates[1]["id"]
    assert _patch(client, settings, tenant, first, {"status": "Live"}).status_code == 200
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    event.listen(engine, "commit", count)
    try:
        answer = _patch(client, settings, tenant, second, {"status": "Live"})
    finally:
        event.remove(engine, "commit", count)
    assert answer.status_code == 200, answer.text
    # plan and record, activating, commit: no transaction of its own for the answer
    assert len(commits) == 3
    body = answer.json()
    assert body["status"] == "Live" and body["project"]["status"] == "Live"
    assert body["audit"][0]["action"] == "deploy" and body["audit"][0]["new_status"] == "Live"
    assert _workflow_active(sandbox, _binding(engine, second).wrk_workflow_id)
    assert not _workflow_active(sandbox, _binding(engine, first).wrk_workflow_id)
    # Every platform call of both deploys (activations, the first's deactivation) over one kept connection.
    pool = client.app.state.wrk.http._transport._pool
    assert len(pool.connections) == 1

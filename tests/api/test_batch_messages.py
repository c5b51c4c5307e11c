"""GET /v1/batch-jobs/messages and `wrk-orch messages list`: the latest messages, newest first, for
platform ops roles; problem+json for bad parameters and missing roles."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cli.main import main
from domain.batch import batch_jobs
from domain.core.settings import get_settings
from domain.core.store import transaction
from tests.api.conftest import bearer, make_token

WINDOW = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))


def _add(engine, job: str, keys: list[str]) -> None:
    with transaction(engine) as session:
        for key in keys:
            batch_jobs.enqueue(
                session,
                queue="bi_batch_jobs",
                exchange="",
                message_id=batch_jobs.message_id(job, key),
                body=batch_jobs.trigger_body(job, key, *WINDOW, run_id="r", metadata={}),
            )


def _ops(settings, roles=("ops_admin",)) -> dict[str, str]:
    return bearer(make_token(settings, tenants=[], roles=list(roles)))


def test_messages_newest_first_filtered_by_job(client, settings, engine):
    _add(engine, "outcome-sync", ["2026-03-01-00:00", "2026-03-01-01:00"])
    _add(engine, "propagation", ["2026-03-01-00:30"])
    answer = client.get("/v1/batch-jobs/messages", headers=_ops(settings))
    assert answer.status_code == 200
    jobs = [(m["job"], m["body"]["partition_key"]) for m in answer.json()["messages"]]
    assert jobs == [
        ("propagation", "2026-03-01-00:30"),
        ("outcome-sync", "2026-03-01-01:00"),
        ("outcome-sync", "2026-03-01-00:00"),
    ]
    answer = client.get("/v1/batch-jobs/messages?job=outcome_sync&limit=1", headers=_ops(settings))
    (only,) = answer.json()["messages"]
    assert only["body"]["partition_key"] == "2026-03-01-01:00" and only["type"] == "workflow.job.trigger"
    assert only["message_id"] == batch_jobs.message_id("outcome-sync", "2026-03-01-01:00")
    assert only["status"] == "pending" and only["published_at"] is None


def test_bad_parameters_and_missing_roles_are_problems(client, settings, engine):
    for query, field in (("job=nightly", "job"), ("limit=0", "limit"), ("limit=abc", "limit")):
        answer = client.get(f"/v1/batch-jobs/messages?{query}", headers=_ops(settings))
        assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "validation_error" and answer.json()["errors"][0]["field"] == field
    assert client.get("/v1/batch-jobs/messages").json()["code"] == "unauthorized"
    viewer = bearer(make_token(settings, tenants=[], roles=["viewer"]))
    assert client.get("/v1/batch-jobs/messages", headers=viewer).json()["code"] == "forbidden"


def test_the_route_is_in_the_openapi_document(client):
    operation = client.get("/openapi.json").json()["paths"]["/v1/batch-jobs/messages"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"job", "limit"}
    assert {"200", "401", "403", "422"} <= set(operation["responses"])


def test_cli_lists_messages_newest_first(engine, database_url, monkeypatch, capsys):
    _add(engine, "account-health", ["2026-03-01-00:00", "2026-03-01-06:00"])
    _add(engine, "propagation", ["2026-03-01-00:30"])
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert main(["messages", "list", "--job", "account-health"]) == 0
        listed = json.loads(capsys.readouterr().out)["messages"]
        assert main(["messages", "list", "--job", "nightly"]) == 2
    finally:
        get_settings.cache_clear()
    assert [m["body"]["partition_key"] for m in listed] == ["2026-03-01-06:00", "2026-03-01-00:00"]

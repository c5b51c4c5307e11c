import hashlib
import hmac
import json

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from domain.core.models import RepoBuild, TriggerQueue, WebhookDelivery
from domain.core.store import transaction
from domain.queue import queue
from domain.release import release as rel


def _post(client, settings, event: str, payload: dict, delivery: str, signature: str | None = "good"):
    body = json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}
    if signature == "good":
        secret = settings.github_webhook_secret.get_secret_value().encode()
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return client.post("/webhooks/github", content=body, headers=headers)


RELEASE = {"action": "published", "release": {"tag_name": "v1.2.0", "name": "1.2.0", "prerelease": False}}


def test_signed_release_event_queues_one_release_build(client, settings, engine):
    response = _post(client, settings, "release", RELEASE, "d-1")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    again = _post(client, settings, "release", RELEASE, "d-1")  # GitHub redelivers
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    with transaction(engine) as session:
        [row] = session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "release")).all()
    assert row.payload["tag"] == "v1.2.0" and row.payload["delivery_id"] == "d-1" and row.tenant_id is None


def test_bad_missing_or_replayed_signature_is_refused(client, settings, engine):
    assert _post(client, settings, "release", RELEASE, "d-2", signature=None).status_code == 401
    wrong = _post(client, settings, "release", RELEASE, "d-3", signature="sha256=" + "0" * 64)
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    # a signature made for another body does not verify this one
    body = json.dumps({**RELEASE, "action": "prereleased"}).encode()
    secret = settings.github_webhook_secret.get_secret_value().encode()
    stolen = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert _post(client, settings, "release", RELEASE, "d-4", signature=stolen).status_code == 401
    with transaction(engine) as session:
        assert session.scalars(select(TriggerQueue)).all() == []
    # A replay: the very request a GitHub delivery made (body, signature, delivery id), captured and
    # sent again. The signature verifies, so the delivery id is what refuses it: nothing is queued twice.
    signed = RELEASE | {"release": RELEASE["release"] | {"tag_name": "v9.9.9"}}
    body = json.dumps(signed).encode()
    headers = {
        "X-GitHub-Event": "release",
        "X-GitHub-Delivery": "d-replayed",
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }
    first = client.post("/webhooks/github", content=body, headers=headers)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    replayed = client.post("/webhooks/github", content=body, headers=headers)
    assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"
    with transaction(engine) as session:
        [row] = session.scalars(select(TriggerQueue)).all()
    assert row.payload["tag"] == "v9.9.9" and row.payload["delivery_id"] == "d-replayed"


def test_ping_other_events_and_actions_are_acknowledged(client, settings, engine):
    assert _post(client, settings, "ping", {"zen": "hi"}, "d-5").json() == {"status": "pong", "event": "ping"}
    assert _post(client, settings, "push", {}, "d-6").json()["status"] == "ignored"
    drafted = {**RELEASE, "action": "created"}
    assert _post(client, settings, "release", drafted, "d-7").json()["status"] == "ignored"
    with transaction(engine) as session:
        assert queue.stats(session)["kinds"]["release"]["states"]["available"] == 0


def test_invalid_release_payload_names_the_field_and_keeps_nothing(client, settings, engine):
    response = _post(client, settings, "release", {"action": "published", "release": {}}, "d-8")
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "release.tag_name"
    fixed = _post(client, settings, "release", RELEASE, "d-8")  # the same delivery, fixed, is handled
    assert fixed.status_code == 202


def _deliveries(engine) -> list[str]:
    with transaction(engine) as session:
        return sorted(session.scalars(select(WebhookDelivery.delivery_id)).all())


def test_a_second_delivery_for_a_queued_tag_is_acknowledged_with_the_existing_trigger(client, settings, engine):
    # A prerelease created on GitHub sends `prereleased` and then `published`.
    prereleased = {"action": "prereleased", "release": {"tag_name": "v9.0.0-rc.1", "prerelease": True}}
    published = {"action": "published", "release": {"tag_name": "v9.0.0-rc.1", "prerelease": True}}
    first = _post(client, settings, "release", prereleased, "pre-1")
    assert first.status_code == 202 and first.json()["status"] == "queued"
    second = _post(client, settings, "release", published, "pub-1")
    assert second.status_code == 200
    assert second.json() == {"status": "already_queued", "event": "release", "trigger_id": first.json()["trigger_id"]}
    assert _deliveries(engine) == ["pre-1", "pub-1"]
    with transaction(engine) as session:
        assert len(session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "release")).all()) == 1


def test_a_delivery_for_a_running_release_is_acknowledged(client, settings, engine):
    with transaction(engine) as session:
        release_id = rel.start_release(session, "v9.1.0", None, False, ["commons"], "run-ui")  # launched from the UI
    answer = _post(client, settings, "release", {**RELEASE, "release": {"tag_name": "v9.1.0"}}, "d-run")
    assert answer.status_code == 200
    assert answer.json() == {"status": "already_queued", "event": "release", "release_id": release_id}
    with transaction(engine) as session:
        assert session.scalars(select(TriggerQueue)).all() == []
    assert _deliveries(engine) == ["d-run"]


def test_an_integrity_error_that_is_not_the_delivery_is_not_a_duplicate(client, settings, engine, monkeypatch):
    def broken(*_args, **_kwargs):
        raise IntegrityError("INSERT INTO trigger_queue", {}, Exception("violates check constraint"))

    monkeypatch.setattr(queue, "enqueue", broken)
    answer = _post(client, settings, "release", RELEASE, "d-int")
    assert answer.status_code == 500
    assert _deliveries(engine) == []  # not recorded: GitHub's redelivery is handled again


@pytest.mark.parametrize("tag", ["../../etc", "v1..0", "a b", "-rf"])
def test_a_tag_git_would_refuse_is_422_naming_the_field(client, settings, engine, tag):
    answer = _post(client, settings, "release", {"action": "published", "release": {"tag_name": tag}}, f"d-{tag}")
    assert answer.status_code == 422
    assert answer.json()["code"] == "validation_error"
    assert [e["field"] for e in answer.json()["errors"]] == ["release.tag_name"]
    with transaction(engine) as session:
        assert session.scalars(select(TriggerQueue)).all() == []


def test_a_tag_with_a_slash_is_queued(client, settings, engine):
    answer = _post(client, settings, "release", {"action": "published", "release": {"tag_name": "app/v2.0.0"}}, "d-s")
    assert answer.status_code == 202 and answer.json()["status"] == "queued"


def _running_build(engine, tag: str) -> str:
    with transaction(engine) as session:
        release_id = rel.start_release(session, tag, None, False, ["commons"], "run-1")
        rel.begin_attempt(session, release_id, "commons", attempt=1, correlation_id=f"corr-{tag}", github_run_id="4242")
    return release_id


def _build(engine, release_id: str) -> RepoBuild:
    with transaction(engine) as session:
        row = rel.repo_build(session, release_id, "commons")
        session.expunge(row)
        return row


def test_repository_dispatch_notices_update_the_matching_build(client, settings, engine):
    release_id = _running_build(engine, "v9.2.0")
    notice = {
        "action": "build-completed",
        "branch": "main",
        "client_payload": {"correlation_id": "corr-v9.2.0", "status": "completed", "conclusion": "failure"},
        "repository": {"full_name": "bllvm/commons"},
    }
    answer = _post(client, settings, "repository_dispatch", notice, "rd-1")
    assert answer.status_code == 200 and answer.json() == {"status": "recorded", "event": "repository_dispatch"}
    row = _build(engine, release_id)
    assert (row.status, row.conclusion) == ("failed", "failure")
    # A late `in_progress` notice (by run id) does not move it back to running.
    late = {"action": "build-started", "client_payload": {"run_id": 4242, "status": "in_progress"}}
    assert _post(client, settings, "repository_dispatch", late, "rd-2").json()["status"] == "stale"
    assert _build(engine, release_id).status == "failed"
    unrelated = {"action": "something", "client_payload": {"foo": "bar"}}
    assert _post(client, settings, "repository_dispatch", unrelated, "rd-3").json()["status"] == "ignored"


def test_a_workflow_run_success_does_not_mark_the_build_succeeded_before_its_artifacts(client, settings, engine):
    release_id = _running_build(engine, "v9.3.0")
    event = {"action": "completed", "workflow_run": {"id": 4242, "status": "completed", "conclusion": "success"}}
    assert _post(client, settings, "workflow_run", event, "wr-9").json()["status"] == "recorded"
    row = _build(engine, release_id)
    assert (row.status, row.conclusion) == ("running", "success") and not rel.is_built(row)

import hashlib
import hmac
import json

from sqlalchemy import select

from domain import queue
from domain.models import TriggerQueue
from domain.store import transaction


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

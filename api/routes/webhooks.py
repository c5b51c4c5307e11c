"""`POST /webhooks/github`: signed GitHub deliveries. A `release` that is published or prereleased
queues a release build (a tag whose release is already queued, pending or running is acknowledged as
`already_queued`); `workflow_run` and `repository_dispatch` (the repositories' build-completion notices)
update the matching repository build, never backwards; a repeated delivery is acknowledged and ignored;
other events are acknowledged and ignored. Every handled delivery is recorded in webhook_deliveries."""

import hashlib
import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.openapi import Answer, Endpoint
from api.params import Header
from api.problems import Problem, validation_problem
from api.request_rules import parse_json
from api.requests import engine
from api.routes.releases import queue_release
from domain.core.models import WebhookDelivery
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.queue.triggers import ReleaseTrigger
from domain.release import release as rel

RELEASE_ACTIONS = {"published", "prereleased"}
# As long as webhook_deliveries keeps them (GitHub's are a GUID and a short event name).
SIGNATURE = Header("X-Hub-Signature-256", required=True, description="sha256=<hex HMAC-SHA256 of the body>")
EVENT = Header("X-GitHub-Event", max_length=64)
DELIVERY = Header("X-GitHub-Delivery", required=True, max_length=100)


class WebhookAnswer(BaseModel):
    status: str
    event: str | None = None
    trigger_id: int | None = None
    release_id: str | None = None


class ReleaseEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    class Release(BaseModel):
        model_config = ConfigDict(extra="ignore")
        tag_name: str
        name: str | None = None
        prerelease: bool = False

        @field_validator("tag_name")
        @classmethod
        def _git_ref_name(cls, tag: str) -> str:
            return rel.validate_tag(tag)

    action: str
    release: Release


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


async def github_webhook(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    body = await request.body()
    if not verify_signature(
        settings.github_webhook_secret.get_secret_value(), body, request.headers.get("x-hub-signature-256")
    ):
        raise Problem(401, "unauthorized", "missing or invalid X-Hub-Signature-256")
    event = EVENT.read(request) or ""
    delivery = DELIVERY.read(request)
    if not delivery:
        raise Problem(
            422,
            "validation_error",
            "X-GitHub-Delivery is required",
            errors=[{"field": "X-GitHub-Delivery", "message": "required"}],
        )
    payload: Any = parse_json(body, settings.request_json_max_depth)

    def seen() -> bool:
        with transaction(engine(request)) as session:
            return session.get(WebhookDelivery, delivery) is not None

    def handle() -> tuple[int, dict[str, Any]]:
        if seen():
            return 200, {"status": "duplicate", "event": event}
        try:
            with transaction(engine(request)) as session:
                # Recording the delivery and acting on it commit together: a redelivery after a failure
                # is handled again, a redelivery after success is ignored.
                session.add(WebhookDelivery(delivery_id=delivery, event=event))
                session.flush()
                return _dispatch(session, event, payload, delivery)
        except IntegrityError:
            # The same delivery handled at the same moment by another worker; any other constraint
            # violation is an error of ours, not a duplicate, and must not be acknowledged as one.
            if seen():
                return 200, {"status": "duplicate", "event": event}
            raise

    status, answer = await run_in_threadpool(handle)
    return JSONResponse(WebhookAnswer.model_validate(answer).model_dump(exclude_none=True), status_code=status)


def _dispatch(session: Any, event: str, payload: Any, delivery: str) -> tuple[int, dict[str, Any]]:
    if event == "ping":
        return 200, {"status": "pong", "event": event}
    if event == "release":
        try:
            release = ReleaseEvent.model_validate(payload)
        except ValidationError as exc:
            raise validation_problem(exc) from exc
        if release.action not in RELEASE_ACTIONS:
            return 202, {"status": "ignored", "event": event}
        trigger = ReleaseTrigger(
            tag=release.release.tag_name,
            name=release.release.name,
            prerelease=release.release.prerelease,
            source="webhook",
            delivery_id=delivery,
        )
        answer = queue_release(session, trigger)
        if answer["status"] == "queued":
            return 202, {"status": "queued", "event": event, "trigger_id": answer["trigger_id"]}
        return 200, answer | {"event": event}
    if event == "workflow_run" and isinstance(payload, dict) and isinstance(payload.get("workflow_run"), dict):
        run = payload["workflow_run"]
        outcome = rel.apply_run_event(
            session,
            github_run_id=str(run.get("id")),
            status=run.get("status"),
            conclusion=run.get("conclusion"),
            url=run.get("html_url"),
        )
        return 200, {"status": outcome, "event": event}
    if event == "repository_dispatch" and isinstance(payload, dict):
        notice = payload.get("client_payload")
        if not isinstance(notice, dict) or not (notice.get("run_id") or notice.get("correlation_id")):
            return 202, {"status": "ignored", "event": event}
        outcome = rel.apply_run_event(
            session,
            github_run_id=str(notice["run_id"]) if notice.get("run_id") else None,
            correlation_id=str(notice["correlation_id"]) if notice.get("correlation_id") else None,
            status=notice.get("status") or "completed",
            conclusion=notice.get("conclusion"),
            url=notice.get("html_url"),
        )
        return 200, {"status": outcome, "event": event}
    return 202, {"status": "ignored", "event": event}


ENDPOINTS = [
    Endpoint(
        "POST",
        "/webhooks/github",
        github_webhook,
        "GitHub webhook (HMAC-signed): release published/prereleased queues a release build; "
        "workflow_run and repository_dispatch update repository builds",
        request_schema=lambda _components: {"description": "GitHub's event payload (JSON)"},
        response=WebhookAnswer,
        answers=[Answer(202, "Queued a release build, or an event acknowledged and ignored", WebhookAnswer)],
        auth=False,
        errors={401: ["unauthorized"]},
        headers=[SIGNATURE, EVENT, DELIVERY],
        tags=["webhooks"],
    ),
]

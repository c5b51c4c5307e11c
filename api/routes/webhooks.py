"""`POST /webhooks/github`: signed GitHub deliveries. A `release` that is published or prereleased
queues a release build; `workflow_run` updates the matching repository build; a repeated delivery is
acknowledged and ignored; other events are acknowledged and ignored."""

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.openapi import Endpoint
from api.problems import Problem, validation_problem
from api.requests import engine
from domain import queue
from domain.models import BuildStatus, RepoBuild, WebhookDelivery
from domain.settings import Settings
from domain.store import transaction
from domain.triggers import ReleaseTrigger

RELEASE_ACTIONS = {"published", "prereleased"}


class WebhookAnswer(BaseModel):
    status: str
    event: str | None = None
    trigger_id: int | None = None


class ReleaseEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    class Release(BaseModel):
        model_config = ConfigDict(extra="ignore")
        tag_name: str
        name: str | None = None
        prerelease: bool = False

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
    event = request.headers.get("x-github-event", "")
    delivery = request.headers.get("x-github-delivery")
    if not delivery:
        raise Problem(
            422,
            "validation_error",
            "X-GitHub-Delivery is required",
            errors=[{"field": "X-GitHub-Delivery", "message": "required"}],
        )
    try:
        payload: Any = json.loads(body)
    except ValueError as exc:
        raise Problem(
            422, "validation_error", "body is not valid JSON", errors=[{"field": "body", "message": "invalid JSON"}]
        ) from exc

    def handle() -> tuple[int, dict[str, Any]]:
        try:
            with transaction(engine(request)) as session:
                # Recording the delivery and acting on it commit together: a redelivery after a failure
                # is handled again, a redelivery after success is ignored.
                session.add(WebhookDelivery(delivery_id=delivery, event=event))
                session.flush()
                return _dispatch(session, event, payload, delivery)
        except IntegrityError:
            return 200, {"status": "duplicate", "event": event}

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
        trigger_id = queue.enqueue(session, "release", None, trigger.model_dump(), dedup_key=f"release:{trigger.tag}")
        return 202, {"status": "queued", "event": event, "trigger_id": trigger_id}
    if event == "workflow_run" and isinstance(payload, dict) and isinstance(payload.get("workflow_run"), dict):
        run = payload["workflow_run"]
        status = {"success": BuildStatus.SUCCEEDED.value}.get(run.get("conclusion") or "")
        values: dict[str, Any] = {"conclusion": run.get("conclusion"), "updated_at": datetime.now(UTC)}
        if run.get("status") == "completed":
            values["status"] = status or BuildStatus.FAILED.value
        elif run.get("status") in ("queued", "in_progress"):
            values["status"] = BuildStatus.RUNNING.value
        session.execute(update(RepoBuild).where(RepoBuild.github_run_id == str(run.get("id"))).values(**values))
        return 200, {"status": "recorded", "event": event}
    return 202, {"status": "ignored", "event": event}


ENDPOINTS = [
    Endpoint(
        "POST",
        "/webhooks/github",
        github_webhook,
        "GitHub webhook (HMAC-signed): release published/prereleased queues a release build",
        response=WebhookAnswer,
        auth=False,
        errors=[401, 422],
        headers=["X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery"],
        tags=["webhooks"],
    ),
]

"""Batch jobs' messages: the latest `workflow.job.trigger` messages in the outbox, newest first."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require_platform
from api.openapi import Endpoint
from api.params import Choice, Integer
from api.requests import engine
from domain.batch import batch_jobs
from domain.core.models import OutboundMessage
from domain.core.store import read_transaction

MAX_LIMIT = 500
JOB_NAMES = {job.name for job in batch_jobs.JOBS}
JOB = Choice(
    "job",
    sorted(JOB_NAMES | {name.replace("-", "_") for name in JOB_NAMES}),
    description="a job by its hyphenated name (as in the messages) or its asset name",
)
LIMIT = Integer("limit", 50, 1, MAX_LIMIT)


class BatchMessage(BaseModel):
    message_id: str
    type: str
    job: str
    queue: str
    exchange: str
    status: str
    body: dict[str, Any]
    headers: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: datetime
    published_at: datetime | None


class BatchMessages(BaseModel):
    messages: list[BatchMessage]


def message_view(row: OutboundMessage) -> dict[str, Any]:
    return BatchMessage.model_validate(row, from_attributes=True).model_dump(mode="json")


async def list_messages(request: Request) -> JSONResponse:
    # Batch-job triggers belong to no tenant: platform ops roles only.
    require_platform(request, OPS_ROLES)
    chosen = JOB.read(request)
    job = chosen.replace("_", "-") if chosen else None
    limit = LIMIT.read(request)
    assert limit is not None

    def load() -> list[dict[str, Any]]:
        with read_transaction(engine(request)) as session:
            return [message_view(row) for row in batch_jobs.latest(session, job=job, limit=limit)]

    return JSONResponse({"messages": await run_in_threadpool(load)})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/batch-jobs/messages",
        list_messages,
        "The latest batch-job trigger messages (workflow.job.trigger), newest first",
        response=BatchMessages,
        query=[JOB, LIMIT],
        tags=["batch-jobs"],
    ),
]

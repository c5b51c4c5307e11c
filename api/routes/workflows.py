"""Workflows and their executions. Every route names its tenant in `X-Tenant-ID`
(api.auth.tenant_from_header: missing -> 400, not one of the token's tenants -> 403); another tenant's
rows are not found (404)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require, tenant_from_header
from api.openapi import Endpoint
from api.params import Choices, Integer, Text
from api.problems import Problem
from api.request_rules import integer_param
from api.requests import engine, json_value
from domain.core.lifecycle import Actor
from domain.core.models import ExecutionStatus, TriggerQueue
from domain.core.store import read_transaction, transaction
from domain.workflows import workflows
from domain.workflows.workflow_definitions import DefinitionInvalid, WorkflowSpec, parse

WORKFLOW_ROLES = OPS_ROLES | frozenset({"workflow_operator"})
MAX_LIMIT = 200
LIMIT = Integer("limit", 50, 1, MAX_LIMIT)
OFFSET = Integer("offset", 0, 0, 10**9)
VERSION = Integer("version", None, 1, description="a version of the workflow (default: the current one)")
STATUS = Choices("status", [s.value for s in ExecutionStatus], description="statuses, comma-separated")
WORKFLOW = Text("workflow_id", description="only executions of this workflow")


class StepOut(BaseModel):
    name: str
    kind: str
    depends_on: list[str]
    model_config = {"extra": "allow"}


class WorkflowOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    description: str | None
    version: int
    latest_version: int
    active: bool
    trigger_on: list[str]
    steps: list[StepOut]
    created_at: datetime
    updated_at: datetime


class WorkflowList(BaseModel):
    items: list[WorkflowOut]
    total: int
    limit: int
    offset: int


class ExecutionRequest(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict)


class ExecutionAccepted(BaseModel):
    execution_id: str
    status: str
    workflow_id: str
    version: int
    trigger_id: int | None
    follow: dict[str, str]


class Progress(BaseModel):
    total: int
    done: int
    failed: int
    waiting: int


class ExecutionStepOut(BaseModel):
    name: str
    kind: str
    status: str
    attempts: int
    depends_on: list[str]
    started_at: datetime | None
    finished_at: datetime | None
    output: Any
    error: str | None


class ExecutionOut(BaseModel):
    id: str
    execution_id: str
    tenant_id: str
    workflow_id: str | None
    version: int | None
    status: str
    input: dict[str, Any]
    trigger: dict[str, Any]
    error: str | None
    dagster_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    steps: list[ExecutionStepOut]


class ExecutionList(BaseModel):
    items: list[ExecutionOut]
    total: int
    limit: int
    offset: int


def _tenant(request: Request) -> tuple[str, str]:
    principal = require(request, WORKFLOW_ROLES)
    return tenant_from_header(request, principal), principal.sub


def _spec(request: Request, body: Any) -> Any:
    try:
        return parse(body, request.app.state.settings)
    except DefinitionInvalid as exc:
        raise Problem(422, "validation_error", str(exc), errors=exc.errors) from exc


def _page(request: Request) -> tuple[int, int]:
    limit, offset = LIMIT.read(request), OFFSET.read(request)
    assert limit is not None and offset is not None
    return limit, offset


def _workflow_not_found(workflow_id: str) -> Problem:
    return Problem(404, "not_found", f"workflow {workflow_id} not found")


def _name_taken(name: str) -> Problem:
    return Problem(
        409, "conflict", f"a workflow named {name!r} exists", errors=[{"field": "name", "message": "already used"}]
    )


async def create_workflow(request: Request) -> JSONResponse:
    tenant, actor = _tenant(request)
    spec = _spec(request, await json_value(request))

    def apply() -> dict[str, Any]:
        with transaction(engine(request)) as session:
            workflow = workflows.create_workflow(session, tenant, spec, Actor.user(actor))
            return workflows.workflow_view(session, workflow)

    try:
        view = await run_in_threadpool(apply)
    except workflows.NameTaken as exc:
        raise _name_taken(str(exc)) from exc
    return JSONResponse(
        WorkflowOut.model_validate(view).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/workflows/{view['id']}"},
    )


async def update_workflow(request: Request) -> JSONResponse:
    tenant, actor = _tenant(request)
    workflow_id = request.path_params["workflow_id"]
    spec = _spec(request, await json_value(request))

    def apply() -> dict[str, Any] | None:
        with transaction(engine(request)) as session:
            workflow = workflows.find_workflow(session, tenant, workflow_id, for_update=True)
            if workflow is None:
                return None
            workflows.update_workflow(session, workflow, spec, Actor.user(actor))
            return workflows.workflow_view(session, workflow)

    try:
        view = await run_in_threadpool(apply)
    except workflows.NameTaken as exc:
        raise _name_taken(str(exc)) from exc
    if view is None:
        raise _workflow_not_found(workflow_id)
    return JSONResponse(WorkflowOut.model_validate(view).model_dump(mode="json"))


async def get_workflow(request: Request) -> JSONResponse:
    tenant, _actor = _tenant(request)
    workflow_id = request.path_params["workflow_id"]
    raw_version = request.query_params.get(VERSION.name)
    version = None
    if raw_version is not None:
        version = integer_param(raw_version, VERSION.low, VERSION.high)
        if version is None:  # no version has such a number
            raise _workflow_not_found(workflow_id)

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            workflow = workflows.find_workflow(session, tenant, workflow_id)
            if workflow is None or (version is not None and not 1 <= version <= workflow.latest_version):
                return None
            return workflows.workflow_view(session, workflow, version)

    view = await run_in_threadpool(load)
    if view is None:
        raise _workflow_not_found(workflow_id)
    return JSONResponse(WorkflowOut.model_validate(view).model_dump(mode="json"))


async def list_workflows(request: Request) -> JSONResponse:
    tenant, _actor = _tenant(request)
    limit, offset = _page(request)

    def load() -> dict[str, Any]:
        with read_transaction(engine(request)) as session:
            rows, total = workflows.list_workflows(session, tenant, limit=limit, offset=offset)
            return {"items": [workflows.workflow_view(session, w) for w in rows], "total": total}

    page = await run_in_threadpool(load)
    body = WorkflowList.model_validate(page | {"limit": limit, "offset": offset})
    return JSONResponse(body.model_dump(mode="json"))


async def start_execution(request: Request) -> JSONResponse:
    tenant, actor = _tenant(request)
    workflow_id = request.path_params["workflow_id"]
    body = await json_value(request) if await request.body() else {}  # no body: no input
    try:
        wanted = ExecutionRequest.model_validate(body)
    except Exception as exc:
        raise Problem(
            422, "validation_error", "input must be a JSON object", errors=[{"field": "input", "message": "an object"}]
        ) from exc

    def apply() -> dict[str, Any] | None:
        with transaction(engine(request)) as session:
            workflow = workflows.find_workflow(session, tenant, workflow_id)
            if workflow is None:
                return None
            started = workflows.start_execution(
                session, workflow, input=wanted.input, actor=Actor.user(actor), trigger={"source": "api"}
            )
            execution = started.execution
            queue_state = session.get(TriggerQueue, started.trigger_id) if started.trigger_id else None
            return {
                "execution_id": execution.id,
                "status": execution.status,
                "workflow_id": workflow.id,
                "version": execution.version,
                "trigger_id": started.trigger_id,
                "follow": {
                    "execution": f"/v1/workflow-executions/{execution.id}",
                    **({"trigger": f"/v1/queue/{queue_state.id}"} if queue_state else {}),
                },
            }

    accepted = await run_in_threadpool(apply)
    if accepted is None:
        raise _workflow_not_found(workflow_id)
    return JSONResponse(
        ExecutionAccepted.model_validate(accepted).model_dump(mode="json"),
        status_code=202,
        headers={"Location": accepted["follow"]["execution"]},
    )


def _execution_not_found(execution_id: str) -> Problem:
    return Problem(404, "not_found", f"workflow execution {execution_id} not found")


async def get_execution(request: Request) -> JSONResponse:
    tenant, _actor = _tenant(request)
    execution_id = request.path_params["execution_id"]

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            execution = workflows.find_execution(session, tenant, execution_id)
            if execution is None:
                return None
            return workflows.execution_view(execution, workflows.execution_steps(session, execution.id))

    view = await run_in_threadpool(load)
    if view is None:
        raise _execution_not_found(execution_id)
    return JSONResponse(ExecutionOut.model_validate(view).model_dump(mode="json"))


async def list_executions(request: Request) -> JSONResponse:
    tenant, _actor = _tenant(request)
    limit, offset = _page(request)
    statuses = STATUS.read(request)
    workflow_id = WORKFLOW.read(request)

    def load() -> dict[str, Any]:
        with read_transaction(engine(request)) as session:
            rows, total = workflows.list_executions(
                session, tenant, statuses=statuses, workflow_id=workflow_id, limit=limit, offset=offset
            )
            return {"items": [workflows.execution_view(e, steps) for e, steps in rows], "total": total}

    page = await run_in_threadpool(load)
    return JSONResponse(ExecutionList.model_validate(page | {"limit": limit, "offset": offset}).model_dump(mode="json"))


async def cancel_execution(request: Request) -> JSONResponse:
    tenant, actor = _tenant(request)
    execution_id = request.path_params["execution_id"]

    def apply() -> dict[str, Any] | None:
        with transaction(engine(request)) as session:
            execution = workflows.find_execution(session, tenant, execution_id, for_update=True)
            if execution is None:
                return None
            workflows.cancel_execution(session, execution, Actor.user(actor))
            return workflows.execution_view(execution, workflows.execution_steps(session, execution.id))

    try:
        view = await run_in_threadpool(apply)
    except workflows.NotCancellable as exc:
        raise Problem(
            409,
            "invalid_status_transition",
            f"the execution is {exc.status}: only a live one can be cancelled",
            extra={"current_status": exc.status},
        ) from exc
    if view is None:
        raise _execution_not_found(execution_id)
    return JSONResponse(ExecutionOut.model_validate(view).model_dump(mode="json"))


TAGS = ["workflows"]
NOT_FOUND = {404: ["not_found"]}
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/workflows",
        create_workflow,
        "Define a workflow (version 1)",
        request=WorkflowSpec,
        response=WorkflowOut,
        status=201,
        tenant_header=True,
        tenant_required=True,
        errors={409: ["conflict"]},
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/workflows",
        list_workflows,
        "The tenant's workflows (current versions), newest first",
        response=WorkflowList,
        tenant_header=True,
        tenant_required=True,
        query=[LIMIT, OFFSET],
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/workflows/{workflow_id}",
        get_workflow,
        "A workflow (its current version, or ?version=N)",
        response=WorkflowOut,
        tenant_header=True,
        tenant_required=True,
        errors=NOT_FOUND,
        query=[VERSION],
        tags=TAGS,
    ),
    Endpoint(
        "PUT",
        "/v1/workflows/{workflow_id}",
        update_workflow,
        "A new version of the workflow (executions keep the version they started with)",
        request=WorkflowSpec,
        response=WorkflowOut,
        tenant_header=True,
        tenant_required=True,
        errors={404: ["not_found"], 409: ["conflict"]},
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/v1/workflows/{workflow_id}/executions",
        start_execution,
        "Start an execution of the current version: queued, a run resumes it step by step",
        request=ExecutionRequest,
        body_required=False,
        response=ExecutionAccepted,
        status=202,
        tenant_header=True,
        tenant_required=True,
        errors=NOT_FOUND,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/workflow-executions",
        list_executions,
        "Executions, newest first (?status=&workflow_id=)",
        response=ExecutionList,
        tenant_header=True,
        tenant_required=True,
        query=[STATUS, WORKFLOW, LIMIT, OFFSET],
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/workflow-executions/{execution_id}",
        get_execution,
        "An execution: status, progress and each step's state",
        response=ExecutionOut,
        tenant_header=True,
        tenant_required=True,
        errors=NOT_FOUND,
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/v1/workflow-executions/{execution_id}/cancel",
        cancel_execution,
        "Cancel an execution (open approvals are cancelled too)",
        response=ExecutionOut,
        tenant_header=True,
        tenant_required=True,
        errors={404: ["not_found"], 409: ["invalid_status_transition"]},
        tags=TAGS,
    ),
]

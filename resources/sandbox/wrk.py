"""WRK Platform emulator: workflows created from blueprints, activated and deactivated."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.sandbox.state import SandboxState

# Workflow ids the demo data (`wrk-orch seed-demo`) refers to exist on this platform from the start;
# those of versions seeded Live are active, as a platform that ran them would have them.
DEMO_WORKFLOW_PREFIX = "wf_demo_"
DEMO_LIVE_WORKFLOW_PREFIX = "wf_demo_live_"


def validate_blueprint(blueprint: Any) -> list[dict[str, str]]:
    """The platform's own blueprint rules: a non-empty list of steps with unique ids and known types,
    whose dependencies name earlier-declared steps."""
    if not isinstance(blueprint, dict):
        return [{"path": "blueprint", "message": "must be an object"}]
    steps = blueprint.get("steps")
    if not isinstance(steps, list) or not steps:
        return [{"path": "blueprint.steps", "message": "must be a non-empty list"}]
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        where = f"blueprint.steps[{i}]"
        if not isinstance(step, dict):
            errors.append({"path": where, "message": "must be an object"})
            continue
        step_id = step.get("id")
        if not isinstance(step_id, str) or not step_id:
            errors.append({"path": f"{where}.id", "message": "required"})
        elif step_id in seen:
            errors.append({"path": f"{where}.id", "message": f"duplicate step id {step_id!r}"})
        if not isinstance(step.get("type"), str) or not step.get("type"):
            errors.append({"path": f"{where}.type", "message": "required"})
        for dep in step.get("depends_on", []) or []:
            if dep not in seen:
                errors.append({"path": f"{where}.depends_on", "message": f"unknown step {dep!r}"})
        if isinstance(step_id, str):
            seen.add(step_id)
    return errors


def _authorised(request: Request) -> bool:
    return request.headers.get("authorization", "").startswith("Bearer ")


def _unauthorised() -> JSONResponse:
    return JSONResponse({"error": "unauthorized"}, status_code=401)


def _public(request: Request, workflow: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in workflow.items() if k != "blueprint"} | {"steps": len(workflow["blueprint"]["steps"])}


def _get(state: SandboxState, request: Request, workflow_id: str) -> dict[str, Any] | None:
    with state.lock:
        workflow = state.workflows.get(workflow_id)
        if workflow is None and workflow_id.startswith(DEMO_WORKFLOW_PREFIX):
            workflow = state.workflows[workflow_id] = {
                "id": workflow_id,
                "name": workflow_id,
                "tenant_id": "",
                "active": workflow_id.startswith(DEMO_LIVE_WORKFLOW_PREFIX),
                "url": f"{str(request.base_url).rstrip('/')}/workflows/{workflow_id}",
                "blueprint": {"steps": [{"id": "demo", "type": "noop"}]},
            }
        return workflow


def routes(state: SandboxState) -> list[Route]:
    async def create(request: Request) -> JSONResponse:
        if not _authorised(request):
            return _unauthorised()
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "invalid_json"}, status_code=400)
        errors = validate_blueprint(body.get("blueprint") if isinstance(body, dict) else None)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body.get("name"):
            errors.insert(0, {"path": "name", "message": "required"})
        if isinstance(body, dict) and not isinstance(body.get("tenant_id"), str):
            errors.insert(0, {"path": "tenant_id", "message": "required"})
        if errors:
            return JSONResponse({"error": "blueprint_validation_failed", "details": errors}, status_code=422)
        key = request.headers.get("idempotency-key")
        with state.lock:
            if key and key in state.idempotency:
                return JSONResponse(_public(request, state.workflows[state.idempotency[key]]), status_code=200)
            workflow_id = "wf_" + uuid.uuid4().hex[:20]
            workflow = {
                "id": workflow_id,
                "name": body["name"],
                "tenant_id": body["tenant_id"],
                "active": workflow_id.startswith(DEMO_LIVE_WORKFLOW_PREFIX),
                "url": f"{str(request.base_url).rstrip('/')}/workflows/{workflow_id}",
                "blueprint": body["blueprint"],
            }
            state.workflows[workflow_id] = workflow
            if key:
                state.idempotency[key] = workflow_id
        return JSONResponse(_public(request, workflow), status_code=201)

    async def get(request: Request) -> JSONResponse:
        if not _authorised(request):
            return _unauthorised()
        workflow = _get(state, request, request.path_params["workflow_id"])
        if workflow is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(_public(request, workflow))

    def setter(active: bool):  # type: ignore[no-untyped-def]
        async def handler(request: Request) -> JSONResponse:
            if not _authorised(request):
                return _unauthorised()
            workflow = _get(state, request, request.path_params["workflow_id"])
            if workflow is None:
                return JSONResponse({"error": "not_found"}, status_code=404)
            workflow["active"] = active
            return JSONResponse(_public(request, workflow))

        return handler

    async def listing(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse([{k: v for k, v in w.items()} for w in state.workflows.values()])

    return [
        Route("/wrk-api/workflows", create, methods=["POST"]),
        Route("/wrk-api/workflows/{workflow_id}", get, methods=["GET"]),
        Route("/wrk-api/workflows/{workflow_id}/activate", setter(True), methods=["PATCH"]),
        Route("/wrk-api/workflows/{workflow_id}/deactivate", setter(False), methods=["PATCH"]),
        Route("/_sandbox/wrk/workflows", listing, methods=["GET"]),
    ]

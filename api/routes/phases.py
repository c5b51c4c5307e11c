"""The seven-phase pipeline's HTTP side: the phase endpoint the callers already use (unchanged), a
sync's progress and audit, and proof packet downloads.

`POST /api/v1/workflow/phase/{phaseNumber}` only queues: one insert (a repeat: its lookup), shared by the
POSTs that arrive together (api/group_commit.py), 202 once committed (callers do not wait).
Service-to-service: a token with role `service`; the tenant comes from the token (or `X-Tenant-ID` when
the token has several). Reads are for the user themselves (token `sub` = user id),
the service, or ops, within their tenants: another tenant's rows are simply not found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from api.auth import OPS_ROLES, Principal, require, tenant_of, tenant_scope
from api.group_commit import GroupCommit
from api.openapi import Answer, Endpoint, model_schema
from api.params import Choice, Integer
from api.problems import Problem, is_refused_value
from api.request_rules import field_problem
from api.requests import engine, json_body
from domain.core.errors import UnknownTenant
from domain.core.store import autocommit, read_transaction
from domain.phases import phases, phases_proof, syncs
from domain.queue.queue import QueueError

SERVICE_ROLES = frozenset({"service"})
READ_ROLES = OPS_ROLES | SERVICE_ROLES
# Named as the callers and the error name it.
PHASE_NUMBER = Integer("phaseNumber", low=1, high=7, description="the phase, 1-7")
FORMAT = Choice("format", ["pdf", "json"], "pdf", description="the PDF, or its JSON twin")


class PhaseAccepted(BaseModel):
    trigger_id: int
    sync_id: str
    phase: int


async def trigger_phase(request: Request) -> JSONResponse:
    principal = require(request, SERVICE_ROLES)
    tenant_id = tenant_of(request, principal)
    raw = request.path_params[PHASE_NUMBER.name]
    try:
        phase = phases.parse_phase(raw)
    except phases.InvalidPhase as exc:
        raise Problem(
            400, "invalid_phase", str(exc), errors=[{"field": PHASE_NUMBER.name, "message": "must be an integer 1-7"}]
        ) from None
    body = await json_body(request, phases.REQUESTS[phase])
    max_matches = request.app.state.settings.phase_max_matches
    if isinstance(body, phases.Phase4Request) and len(body.matches) > max_matches:
        # Each match can fan out into phase 5 and 7 triggers (and a payment each): one POST is bounded.
        raise field_problem("matches", f"at most {max_matches} matches per request (PHASE_MAX_MATCHES)")
    try:
        accepted = await request.app.state.phase_commits(phases.posted(tenant_id, phase, body))
    except UnknownTenant as exc:
        # A token may name a tenant the store does not know.
        raise Problem(403, "forbidden", f"tenant {tenant_id} is not known here") from exc
    out = PhaseAccepted(trigger_id=accepted.trigger_id, sync_id=accepted.sync_id, phase=accepted.phase)
    return JSONResponse(
        out.model_dump(),
        status_code=202,
        headers={"Location": syncs.sync_path(body.user_id, accepted.sync_id)},
    )


def phase_commits(db: Engine) -> GroupCommit[phases.Posted, phases.Accepted]:
    """The app's group commit of phase POSTs: the triggers of the POSTs that arrive together are queued by
    one statement on an autocommit connection (its commit fsync'd), each answered once it is committed."""

    def write(posts: list[phases.Posted]) -> list[phases.Accepted | QueueError]:
        with autocommit(db) as connection:
            return phases.accept_many(connection, posts)

    return GroupCommit(write, splits=is_refused_value)


def reader_tenants(request: Request, user_id: str) -> frozenset[str]:
    """The tenants in which the caller may read `user_id`'s pipeline: their own (sub = user id, any role),
    or where they hold a service or ops role."""
    principal: Principal = request.app.state.authenticator.authenticate(request)
    if principal.sub == user_id:
        request.state.actor = principal.sub
        header = request.headers.get("x-tenant-id")
        if header:
            if header not in principal.tenants:
                raise Problem(403, "forbidden", "X-Tenant-ID is not one of your tenants")
            return frozenset({header})
        return frozenset(principal.tenants)
    principal = require(request, READ_ROLES)
    return tenant_scope(request, principal)


class SyncView(BaseModel):
    user_id: str
    sync_id: str
    seller_id: str | None
    progress: dict[str, Any]
    phases: dict[str, str]
    audit: list[dict[str, Any]]
    proof_packets: list[dict[str, Any]]


async def get_sync(request: Request) -> JSONResponse:
    user_id, sync_id = request.path_params["user_id"], request.path_params["sync_id"]
    tenants = reader_tenants(request, user_id)

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            for tenant_id in sorted(tenants):
                view = syncs.sync_view(session, tenant_id, user_id, sync_id)
                if view is not None:
                    return view
        return None

    view = await run_in_threadpool(load)
    if view is None:
        raise Problem(404, "not_found", f"sync {sync_id} of user {user_id} not found")
    return JSONResponse(SyncView.model_validate(view).model_dump(mode="json"))


async def get_proof_packet(request: Request) -> Response:
    user_id, packet_id = request.path_params["user_id"], request.path_params["packet_id"]
    tenants = reader_tenants(request, user_id)

    def load() -> tuple[str, str, str, str] | None:
        with read_transaction(engine(request)) as session:
            packet = syncs.find_packet(session, tenants, user_id, packet_id)
            if packet is None or not packet.pdf_path or not packet.json_path or not packet.json_sha256:
                return None
            return packet.tenant_id, packet.pdf_path, packet.json_path, packet.json_sha256

    found = await run_in_threadpool(load)
    if found is None:
        raise Problem(404, "not_found", f"proof packet {packet_id} of user {user_id} not found")
    tenant_id, pdf_path, json_path, digest = found
    root = Path(request.app.state.settings.proof_packet_dir)
    wanted = Path(json_path if FORMAT.read(request) == "json" else pdf_path)
    # Only files inside the tenant's own folder under PROOF_PACKET_DIR are served.
    if wanted.resolve().parent != phases_proof.folder(root, tenant_id) or not wanted.is_file():
        raise Problem(404, "not_found", f"proof packet {packet_id}'s file is missing")
    media = "application/json" if wanted.suffix == ".json" else "application/pdf"
    return FileResponse(
        wanted,
        media_type=media,
        filename=f"proof-packet-{packet_id}{wanted.suffix}",
        headers={"X-Proof-Json-SHA256": digest},
    )


def _phase_bodies(components: dict[str, Any]) -> dict[str, Any]:
    """Each phase's body (the path's phase number says which)."""
    models = list(dict.fromkeys(phases.REQUESTS.values()))
    return {"anyOf": [model_schema(model, components) for model in models]}


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/workflow/phase/{phaseNumber}",
        trigger_phase,
        "Trigger phase 1-7 of a user's recovery pipeline (service token): queued, answered at once. "
        "The body is the phase's: " + "; ".join(f"{n}: {model.__name__}" for n, model in phases.REQUESTS.items()),
        response=PhaseAccepted,
        request_schema=_phase_bodies,
        status=202,
        tenant_header=True,
        path_params=[PHASE_NUMBER],
        errors={400: ["invalid_phase"], 409: ["conflict"]},
        tags=["phases"],
    ),
    Endpoint(
        "GET",
        "/v1/users/{user_id}/syncs/{sync_id}",
        get_sync,
        "A sync's progress (never backwards), each phase's outcome and the phase audit rows",
        response=SyncView,
        tenant_header=True,
        errors={404: ["not_found"]},
        tags=["phases"],
    ),
    Endpoint(
        "GET",
        "/v1/users/{user_id}/proof-packets/{packet_id}",
        get_proof_packet,
        "A proof packet: the PDF, or its JSON twin with ?format=json (X-Proof-Json-SHA256: the twin's hash)",
        media_type="application/pdf",
        answers=[Answer(200, "The PDF, or its JSON twin with ?format=json", media_type="application/json")],
        tenant_header=True,
        errors={404: ["not_found"]},
        tags=["phases"],
        query=[FORMAT],
    ),
]

"""Integrations backend emulator: each call starts "work" that ends, after `delay_s` (SANDBOX_PHASE_DELAY_S,
or `POST /_sandbox/integrations/config`), with a call back to the caller's phase endpoint, as the real
backend does. So one phase-1 POST drives the whole chain:

    sync (1) -> phase 2 -> detection -> phase 3 -> evidence matching -> phase 4 with four matches
    (0.92 and 0.87 auto-submitted, 0.66 prompted, 0.31 dropped) -> each submitted claim -> phase 5 ->
    payout monitoring -> the 0.92 claim is paid (phase 7), the 0.87 one rejected (phase 6)

The call back carries a service token for the caller's tenant, signed with the development JWT secret
(the sandbox runs only in development). A repeated Idempotency-Key starts nothing new.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domain.core.settings import Settings
from domain.core.tokens import mint_dev_token
from resources.sandbox.state import SandboxState

log = logging.getLogger("sandbox.integrations")
PREFIX = "/integrations/v1"
CALLBACK_ATTEMPTS = 8

# (confidence, amount, fate after payout monitoring)
DEFAULT_MATCHES: list[tuple[str, str, str]] = [
    ("0.92", "125.50", "paid"),
    ("0.87", "48.20", "rejected"),
    ("0.66", "19.99", "paid"),
    ("0.31", "7.45", "paid"),
]


def _phases(state: SandboxState, settings: Settings) -> dict[str, Any]:
    with state.lock:
        if not state.phases:
            state.phases.update(
                {
                    "delay_s": settings.sandbox_phase_delay_s,
                    "callbacks_enabled": True,
                    "jobs": {},  # idempotency key -> job
                    "fates": {},  # claim id -> paid | rejected
                    "callbacks": [],  # every call back made, with its answer
                    "generation": next(_generations),  # a reset drops the call backs still waiting
                    "matches": None,  # a list of match dicts overriding DEFAULT_MATCHES
                }
            )
        return state.phases


def _claim_id(sync_id: str, n: int) -> str:
    return f"clm_{hashlib.sha1(sync_id.encode()).hexdigest()[:10]}_{n}"


def _matches(state: SandboxState, settings: Settings, sync_id: str) -> list[dict[str, Any]]:
    phases = _phases(state, settings)
    if phases["matches"] is not None:
        return [dict(m) for m in phases["matches"]]
    out = []
    for n, (confidence, amount, fate) in enumerate(DEFAULT_MATCHES, start=1):
        claim = _claim_id(sync_id, n)
        phases["fates"][claim] = fate
        out.append(
            {
                "claim_id": claim,
                "confidence": confidence,
                "amount": amount,
                "currency": "USD",
                "evidence_ids": [f"ev_{claim}_invoice", f"ev_{claim}_shipment"],
            }
        )
    return out


_tasks: set[asyncio.Task[None]] = set()
_generations = itertools.count(1)


async def _call_back(
    state: SandboxState,
    settings: Settings,
    generation: int,
    url: str,
    tenant_id: str,
    phase: int,
    body: dict[str, Any],
) -> None:
    phases = _phases(state, settings)
    if generation != phases["generation"] or not phases["callbacks_enabled"]:
        return
    token = mint_dev_token(
        settings, tenants=[tenant_id], roles=["service"], sub="integrations-sandbox", ttl_seconds=600
    )
    status: int | None = None
    error = None
    async with httpx.AsyncClient(timeout=30.0) as client:
        for attempt in range(CALLBACK_ATTEMPTS):
            try:
                response = await client.post(
                    f"{url}/api/v1/workflow/phase/{phase}", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                status = response.status_code
                if status < 500 and status != 429:
                    break
            except httpx.HTTPError as exc:
                error = repr(exc)
            await asyncio.sleep(min(0.25 * 2**attempt, 5.0))
    with state.lock:
        phases["callbacks"].append({"phase": phase, "body": body, "status": status, "error": error, "url": url})
    if status is None or status >= 300:
        log.warning("call back of phase %s to %s failed: %s %s", phase, url, status, error)


def _schedule(
    state: SandboxState, settings: Settings, url: str, tenant_id: str, phase: int, body: dict[str, Any]
) -> None:
    phases = _phases(state, settings)
    generation = phases["generation"]
    loop = asyncio.get_running_loop()

    def fire() -> None:
        task = loop.create_task(_call_back(state, settings, generation, url, tenant_id, phase, body))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    loop.call_later(float(phases["delay_s"]), fire)


def routes(state: SandboxState, settings: Settings) -> list[Route]:
    def start(kind: str) -> Any:
        async def handler(request: Request) -> JSONResponse:
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            body = await request.json()
            missing = [f for f in ("tenant_id", "user_id", "callback_url") if not body.get(f)]
            if missing:
                return JSONResponse({"error": "missing fields", "fields": missing}, status_code=422)
            key = request.headers.get("idempotency-key") or f"{kind}:{state.next_id()}"
            phases = _phases(state, settings)
            with state.lock:
                job = phases["jobs"].get(key)
                if job is not None:
                    return JSONResponse(job, status_code=200)
                job = {
                    "id": f"job_{state.next_id()}",
                    "kind": kind,
                    "status": "running",
                    "sync_id": body.get("sync_id"),
                }
                phases["jobs"][key] = job
            follow = _next(state, settings, kind, body)
            if follow is not None:
                phase, next_body = follow
                _schedule(
                    state, settings, str(body["callback_url"]).rstrip("/"), str(body["tenant_id"]), phase, next_body
                )
            return JSONResponse(job, status_code=202)

        return handler

    async def config(request: Request) -> JSONResponse:
        body = await request.json()
        phases = _phases(state, settings)
        with state.lock:
            for name in ("delay_s", "callbacks_enabled", "matches"):
                if name in body:
                    phases[name] = body[name]
            return JSONResponse({k: phases[k] for k in ("delay_s", "callbacks_enabled", "matches")})

    async def callbacks(_request: Request) -> JSONResponse:
        phases = _phases(state, settings)
        with state.lock:
            return JSONResponse(list(phases["callbacks"]))

    return [
        Route(f"{PREFIX}/syncs", start("sync"), methods=["POST"]),
        Route(f"{PREFIX}/detections", start("detection"), methods=["POST"]),
        Route(f"{PREFIX}/evidence-matching", start("evidence_matching"), methods=["POST"]),
        Route(f"{PREFIX}/claims", start("claim"), methods=["POST"]),
        Route(f"{PREFIX}/payout-monitoring", start("payout_monitoring"), methods=["POST"]),
        Route(f"{PREFIX}/learning-pipeline", start("learning_pipeline"), methods=["POST"]),
        Route("/_sandbox/integrations/config", config, methods=["POST"]),
        Route("/_sandbox/integrations/callbacks", callbacks, methods=["GET"]),
    ]


def _next(
    state: SandboxState, settings: Settings, kind: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """The phase this work ends in, and its body."""
    base = {"user_id": body["user_id"], "sync_id": body.get("sync_id")}
    if body.get("seller_id"):
        base["seller_id"] = body["seller_id"]
    if kind == "sync":
        return 2, base
    if kind == "detection":
        return 3, base
    if kind == "evidence_matching":
        return 4, {**base, "matches": _matches(state, settings, str(body.get("sync_id")))}
    claim: dict[str, Any] = {k: body[k] for k in ("claim_id", "amount", "currency") if k in body}
    if kind == "claim":
        return 5, {**base, **claim}
    if kind == "payout_monitoring":
        fate = _phases(state, settings)["fates"].get(body.get("claim_id"), "paid")
        if fate == "rejected":
            return 6, {**base, "claim_id": body["claim_id"], "reason_code": "insufficient_evidence"}
        return 7, {**base, **claim, "payout_id": f"po_{body['claim_id']}"}
    return None

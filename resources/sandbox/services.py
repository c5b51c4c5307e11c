"""The six services workflow steps call, emulated: each echoes the call, after a configurable latency,
and honours `Idempotency-Key` (a key seen before gets the first answer again, `Idempotent-Replayed:
true`, and the effect is not done twice; a repeat arriving while the first is still being served waits
for it). Faults come from the sandbox's fault injection (`POST /_sandbox/faults` with a path such as
`/services/ml_service/.*`): a faulted call never reaches the service, so nothing is done.

Control: `POST /_sandbox/services/config {"latency_s": 0.05, "services": {"ml_service": {"latency_s": 1}}}`,
`GET /_sandbox/services/effects` (how many times each idempotency key's effect was done, how many
calls with it arrived, and the most calls the services served at once).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.sandbox.state import SandboxState

SERVICES = (
    "integration_manager",
    "risk_analytics",
    "ml_service",
    "forecasting",
    "recommendations",
    "adaptive_learning",
)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _value(seed: str) -> float:
    """A stable number in [0, 1) for a call (a score a later step can refer to)."""
    return int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


def routes(state: SandboxState) -> list[Route]:
    in_progress: dict[str, asyncio.Event] = {}

    async def serve(request: Request) -> JSONResponse:
        service = request.path_params["service"]
        if service not in SERVICES:
            return JSONResponse({"error": f"unknown service {service!r}"}, status_code=404)
        key = request.headers.get("idempotency-key")
        if key:
            scoped = f"{service}:{key}"
            with state.lock:
                state.service_arrivals[scoped] = state.service_arrivals.get(scoped, 0) + 1
            while True:
                with state.lock:
                    answer = state.service_answers.get(scoped)
                if answer is not None:
                    return JSONResponse(answer, headers={"Idempotent-Replayed": "true"})
                event = in_progress.get(scoped)
                if event is None:
                    in_progress[scoped] = asyncio.Event()
                    break
                await event.wait()
        raw = await request.body()
        try:
            body: Any = await request.json() if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with state.lock:
            state.service_in_flight += 1
            state.service_max_in_flight = max(state.service_max_in_flight, state.service_in_flight)
            config = state.service_config
            latency = float(config.get("services", {}).get(service, {}).get("latency_s", config.get("latency_s", 0.0)))
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            path = "/" + request.path_params["path"]
            answer = {
                "service": service,
                "method": request.method,
                "path": path,
                "received": body,
                "tenant_id": request.headers.get("x-tenant-id"),
                "idempotency_key": key,
                "value": _value(f"{service}:{key or path}"),
                "ok": True,
            }
            with state.lock:
                if key:
                    state.service_answers[f"{service}:{key}"] = answer
                    state.service_effects[f"{service}:{key}"] = state.service_effects.get(f"{service}:{key}", 0) + 1
            return JSONResponse(answer)
        finally:
            with state.lock:
                state.service_in_flight -= 1
            if key:
                event = in_progress.pop(f"{service}:{key}", None)
                if event is not None:
                    event.set()

    async def configure(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            state.service_config = {
                "latency_s": float(body.get("latency_s", 0.0)),
                "services": dict(body.get("services", {})),
            }
            return JSONResponse(state.service_config)

    async def effects(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse(
                {
                    "effects": dict(state.service_effects),
                    "arrivals": dict(state.service_arrivals),
                    "max_in_flight": state.service_max_in_flight,
                }
            )

    return [
        Route("/services/{service}/{path:path}", serve, methods=METHODS),
        Route("/_sandbox/services/config", configure, methods=["POST"]),
        Route("/_sandbox/services/effects", effects, methods=["GET"]),
    ]

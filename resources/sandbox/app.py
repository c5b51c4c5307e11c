"""The sandbox app (`make run` serves it on :8900): emulators, sinks, fault injection, call log.

Control endpoints live under `/_sandbox/`:
- `POST /_sandbox/faults` `{"method", "path" (regex), "count", "action": error|timeout|delay, "status",
  "body", "headers", "delay_s"}`; `DELETE /_sandbox/faults`; `GET /_sandbox/faults` (with the
  counts left)
- `GET /_sandbox/calls?method=&path=` (every emulated call, with its answer's status)
- `GET /_sandbox/mail`, `GET /_sandbox/slack` (received messages); `POST /_sandbox/reset`
- `POST /callbacks/<name>` (an approval callback receiver), `GET /_sandbox/callbacks` (what it received)
- `POST /_sandbox/github/config`, `GET /_sandbox/wrk/workflows`
- `POST /_sandbox/integrations/config` `{"delay_s", "callbacks_enabled", "matches"}`,
  `GET /_sandbox/integrations/callbacks`, `GET /_sandbox/payments/intents`
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.core import logs
from domain.core.settings import Settings, get_settings
from resources.sandbox import github, integrations, payments, services, wrk
from resources.sandbox.state import Fault, SandboxState

CONTROL_PREFIX = "/_sandbox"


class FaultInjection:
    """Applies the next matching fault to an emulated call, and records every call with its status."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX) or "/_storage/" in scope["path"]:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        fault = self.state.take_fault(method, path)
        if fault is not None and fault.action in ("error", "timeout"):
            # Recorded on arrival: a client that timed out has seen the call happen.
            self.state.record(method, path, fault.status, headers)
        if fault is not None and fault.action in ("timeout", "delay"):
            await asyncio.sleep(fault.delay_s or (30.0 if fault.action == "timeout" else 0.0))
        if fault is not None and fault.action in ("error", "timeout"):
            body = fault.body if fault.body is not None else {"error": "injected fault", "status": fault.status}
            response = Response(
                json.dumps(body), status_code=fault.status, headers=fault.headers, media_type="application/json"
            )
            await response(scope, receive, send)
            return
        status_holder: dict[str, int] = {}

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.state.record(method, path, status_holder.get("status", 500), headers)


class _MailSink:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        with self.state.lock:
            self.state.mail.append(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "subject": str(message["Subject"]),
                    "message_id": str(message["Message-ID"]),
                    "body": body.get_content() if body is not None else "",
                }
            )
        return "250 OK"


def create_app(
    state: SandboxState | None = None, smtp_port: int | None = None, settings: Settings | None = None
) -> Starlette:
    """The sandbox, with the settings it needs (the phase call backs' delay and the development token
    secret, its log format) read once here: its call backs run later on its own event loop, which in a
    test process is a thread beside tests that change the environment and clear the settings' cache."""
    settings = settings or get_settings()
    logs.configure("sandbox", settings.log_level, settings.log_format)
    state = state or SandboxState()
    if smtp_port is None:
        smtp_port = int(os.environ.get("SMTP_PORT", "8925"))

    async def add_fault(request: Request) -> JSONResponse:
        body = await request.json()
        faults = body if isinstance(body, list) else [body]
        with state.lock:
            for spec in faults:
                state.faults.append(Fault(**spec))
        return JSONResponse({"faults": len(state.faults)}, status_code=201)

    async def list_faults(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse([{**vars(fault)} for fault in state.faults])

    async def clear_faults(_request: Request) -> Response:
        with state.lock:
            state.faults.clear()
        return Response(status_code=204)

    async def calls(request: Request) -> JSONResponse:
        method = request.query_params.get("method")
        pattern = request.query_params.get("path")
        with state.lock:
            found = [
                {
                    "method": c.method,
                    "path": c.path,
                    "status": c.status,
                    "at": c.at,
                    "idempotency_key": c.headers.get("idempotency-key"),
                }
                for c in state.calls
                if (method is None or c.method == method) and (pattern is None or re.fullmatch(pattern, c.path))
            ]
        return JSONResponse(found)

    async def reset(_request: Request) -> Response:
        with state.lock:
            state.reset()
        return Response(status_code=204)

    async def mail(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse(list(state.mail))

    async def slack_messages(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse(list(state.slack))

    async def slack_webhook(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            state.slack.append({"hook": request.path_params["hook"], "text": body.get("text", ""), "body": body})
        return Response("ok", media_type="text/plain")

    # Approval callbacks (a standalone approval's callback_url): a receiver that records what it gets.
    async def callback_sink(request: Request) -> JSONResponse:
        body = await request.json()
        headers = {k: v for k, v in request.headers.items() if k in ("idempotency-key", "x-wrk-signature")}
        with state.lock:
            state.callbacks.append({"name": request.path_params["name"], "body": body, "headers": headers})
        return JSONResponse({"received": True})

    async def callbacks(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse(list(state.callbacks))

    async def index(_request: Request) -> JSONResponse:
        return JSONResponse({"sandbox": "wrk-orchestration", "smtp_port": smtp_port, "control": CONTROL_PREFIX})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        controller = None
        if smtp_port:
            controller = Controller(_MailSink(state), hostname="127.0.0.1", port=smtp_port)
            controller.start()
        try:
            yield
        finally:
            if controller is not None:
                controller.stop()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            *wrk.routes(state),
            *github.routes(state),
            *services.routes(state),  # the six workflow services
            *integrations.routes(state, settings),  # the seven-phase pipeline's backend and payments
            *payments.routes(state),
            Route("/slack/webhook/{hook:path}", slack_webhook, methods=["POST"]),
            Route(CONTROL_PREFIX + "/faults", add_fault, methods=["POST"]),
            Route(CONTROL_PREFIX + "/faults", clear_faults, methods=["DELETE"]),
            Route(CONTROL_PREFIX + "/faults", list_faults, methods=["GET"]),
            Route(CONTROL_PREFIX + "/calls", calls, methods=["GET"]),
            Route(CONTROL_PREFIX + "/reset", reset, methods=["POST"]),
            Route(CONTROL_PREFIX + "/mail", mail, methods=["GET"]),
            Route(CONTROL_PREFIX + "/slack", slack_messages, methods=["GET"]),
            Route("/callbacks/{name:path}", callback_sink, methods=["POST"]),
            Route(CONTROL_PREFIX + "/callbacks", callbacks, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.add_middleware(FaultInjection, state=state)
    return app

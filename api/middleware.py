"""Request ids, JSON access logs (with tenant and actor) and the HTTP metrics, as one plain ASGI middleware. The
request id is bound to every log record written while the request is served (structlog's context variables)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http_metrics import DURATION, IN_FLIGHT, REQUESTS, method_label, route_template

access_log = logging.getLogger("wrk.api.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = {"code": 500}
        IN_FLIGHT.inc()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            IN_FLIGHT.dec()
            method, route = method_label(scope["method"]), route_template(scope)
            REQUESTS.labels(method, route, str(status["code"])).inc()
            DURATION.labels(method, route).observe(seconds)
            entry: dict[str, Any] = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status["code"],
                "duration_ms": round(seconds * 1000, 2),
                "tenant_id": state.get("tenant_id"),
                "actor": state.get("actor"),
            }
            access_log.info("%s %s %s", scope["method"], scope["path"], status["code"], extra=entry)
            structlog.contextvars.unbind_contextvars("request_id")

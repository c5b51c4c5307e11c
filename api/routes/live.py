"""Users' live phase updates: `GET /ws/users/{user_id}` (WebSocket) and the same stream as Server-Sent
Events at `GET /v1/users/{user_id}/events`.

Who reads which stream: a user reads their own (token `sub` == `user_id`) in one of the token's tenants;
a holder of an ops role (or the `service` role) in a tenant reads any user's stream of that tenant: the
same readers as the user's syncs and proof packets (api/routes/phases.py READ_ROLES). The tenant is the
token's only one, or the one named by `X-Tenant-ID` (or `?tenant_id=`, since browsers cannot set headers
on a WebSocket or an EventSource); rows of other tenants are never read.

Where to start: `?after=<seq>` (WebSocket, SSE) or `Last-Event-ID` (SSE; it wins over `after`) replays
the events after that number, then goes on live; without either the stream starts live, after the last
event already recorded. Numbers are contiguous per stream, so a jump means events older than
PHASE_EVENTS_RETENTION were pruned.

A refused WebSocket is accepted and closed at once with a code that says why: 4401 (no or bad token),
4403 (another user's stream without a reader role there, a tenant not in the token), 4400 (several tenants and
none named), 4422 (bad `after`); the reason text carries the problem's code and detail. The HTTP
endpoint answers the same refusals as problem+json.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.auth import Authenticator, Principal
from api.http_metrics import LIVE_CONNECTIONS
from api.openapi import Endpoint
from api.params import Header, Integer, Text
from api.phase_stream import PhaseStream
from api.problems import Problem
from api.request_rules import integer_param
from api.routes.phases import READ_ROLES
from api.routing import SegmentWebSocketRoute

log = logging.getLogger("wrk.api.live")

# The subprotocol a browser names beside its token: `new WebSocket(url, ["bearer", token])`.
BEARER_SUBPROTOCOL = "bearer"
SSE_PING_S = 15  # a comment line this often keeps proxies from closing an idle stream
SSE_RETRY_MS = 2000  # how long an EventSource waits before reconnecting (with Last-Event-ID)
AFTER = Integer("after", description="replay the events after this seq, then go on live")
TENANT = Text("tenant_id", description="the tenant, for clients that cannot send X-Tenant-ID")
ACCESS_TOKEN = Text("access_token", description="the bearer token, for clients that cannot send headers")
LAST_EVENT_ID = Header("Last-Event-ID", description="the seq of the last event received (wins over after)")


def stream_tenant(principal: Principal, user_id: str, tenant_hint: str | None) -> str:
    """The tenant whose stream of `user_id` the caller may read, or Problem saying why not."""
    if tenant_hint:
        if tenant_hint not in principal.tenants:
            raise Problem(403, "forbidden", f"tenant {tenant_hint} is not one of your tenants")
        tenant = tenant_hint
    elif len(principal.tenants) == 1:
        tenant = next(iter(principal.tenants))
    else:
        raise Problem(400, "tenant_required", "your token has several tenants: send X-Tenant-ID or ?tenant_id=")
    if principal.sub == user_id or principal.roles_in(tenant) & READ_ROLES:
        return tenant
    raise Problem(
        403,
        "forbidden",
        f"you may read only your own stream; user {user_id}'s needs one of {sorted(READ_ROLES)} in tenant {tenant}",
    )


def parse_after(raw: str | None, field: str) -> int | None:
    if raw is None or raw == "":
        return None
    seq = integer_param(raw, AFTER.low, AFTER.high)
    if seq is None:
        raise Problem(
            422,
            "validation_error",
            f"{field} must be a non-negative integer (a seq)",
            errors=[{"field": field, "message": "not a non-negative integer of at most 64 bits"}],
        )
    return seq


def _stream(connection: Request | WebSocket) -> PhaseStream:
    stream: PhaseStream = connection.app.state.phase_stream
    return stream


def _authenticator(connection: Request | WebSocket) -> Authenticator:
    authenticator: Authenticator = connection.app.state.authenticator
    return authenticator


def _tenant_hint(connection: Request | WebSocket) -> str | None:
    return connection.headers.get("x-tenant-id") or connection.query_params.get("tenant_id") or None


# -- WebSocket ------------------------------------------------------------------------------------------


def _websocket_token(websocket: WebSocket) -> str:
    offered: list[str] = list(websocket.scope.get("subprotocols") or [])
    if BEARER_SUBPROTOCOL in offered:
        following = offered[offered.index(BEARER_SUBPROTOCOL) + 1 :]
        if following:
            return following[0]
    token = websocket.query_params.get("access_token")
    if token:
        return token
    raise Problem(401, "unauthorized", "missing token: send subprotocols ['bearer', <token>] or ?access_token=")


def _close_reason(problem: Problem) -> str:
    reason = f"{problem.code}: {problem.detail or problem.code}"
    return reason.encode()[:123].decode(errors="ignore")  # a close frame's reason is at most 123 bytes


async def user_stream_ws(websocket: WebSocket) -> None:
    user_id = websocket.path_params["user_id"]
    offered = websocket.scope.get("subprotocols") or []
    subprotocol = BEARER_SUBPROTOCOL if BEARER_SUBPROTOCOL in offered else None
    try:
        principal = _authenticator(websocket).verify(_websocket_token(websocket))
        tenant = stream_tenant(principal, user_id, _tenant_hint(websocket))
        after = parse_after(websocket.query_params.get("after"), "after")
    except Problem as problem:
        # Accepted first: a close before the handshake is a bare HTTP 403 that says nothing.
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(code=4000 + problem.status, reason=_close_reason(problem))
        log.info(json.dumps({"event": "ws_refused", "user_id": user_id, "code": problem.code}))
        return
    await websocket.accept(subprotocol=subprotocol)
    stream = _stream(websocket)
    if after is None:
        after = await stream.last_seq(tenant, user_id)
    # Counted once its starting point is fixed: whatever is appended from now on reaches this client.
    LIVE_CONNECTIONS.labels("websocket").inc()
    log.info(json.dumps({"event": "ws_open", "tenant_id": tenant, "user_id": user_id, "actor": principal.sub}))
    try:
        async with anyio.create_task_group() as group:

            async def until_client_leaves() -> None:
                # Nothing the client sends means anything; its leaving ends the stream.
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(until_client_leaves)
            async with contextlib.aclosing(stream.events(tenant, user_id, after)) as events:
                async for event in events:
                    await websocket.send_json(event)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away while an event was being sent
    finally:
        LIVE_CONNECTIONS.labels("websocket").dec()
        log.info(json.dumps({"event": "ws_closed", "tenant_id": tenant, "user_id": user_id}))


# -- Server-Sent Events ---------------------------------------------------------------------------------


async def user_events(request: Request) -> EventSourceResponse:
    """The user's stream as Server-Sent Events: `id` is the seq, `event` the type, `data` the event."""
    user_id = request.path_params["user_id"]
    authenticator = _authenticator(request)
    query_token = request.query_params.get("access_token")
    if "authorization" not in request.headers and query_token:
        principal = authenticator.verify(query_token)  # EventSource cannot send headers
    else:
        principal = authenticator.authenticate(request)
    request.state.actor = principal.sub
    tenant = stream_tenant(principal, user_id, _tenant_hint(request))
    request.state.tenant_id = tenant
    last_event_id = request.headers.get("last-event-id")
    if last_event_id:
        after = parse_after(last_event_id, "Last-Event-ID")
    else:
        after = parse_after(request.query_params.get("after"), "after")
    stream = _stream(request)
    start = after if after is not None else await stream.last_seq(tenant, user_id)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        LIVE_CONNECTIONS.labels("sse").inc()
        try:
            async with contextlib.aclosing(stream.events(tenant, user_id, start)) as events:
                async for event in events:
                    yield ServerSentEvent(
                        data=json.dumps(event), event=event["type"], id=str(event["seq"]), retry=SSE_RETRY_MS
                    )
        finally:
            LIVE_CONNECTIONS.labels("sse").dec()

    return EventSourceResponse(frames(), ping=SSE_PING_S, headers={"Cache-Control": "no-store"})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/users/{user_id}/events",
        user_events,
        "A user's phase events as Server-Sent Events (text/event-stream); resumes after Last-Event-ID",
        media_type="text/event-stream",
        tenant_header=True,
        headers=[LAST_EVENT_ID],
        query=[AFTER, TENANT, ACCESS_TOKEN],
        tags=["live"],
    ),
]

WEBSOCKET_ROUTES = [SegmentWebSocketRoute("/ws/users/{user_id}", user_stream_ws)]

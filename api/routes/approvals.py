"""Human approvals (HITL), under `/hitl/approvals...` (the seed's paths) and the same under
`/v1/hitl/approvals...`: list, one, a standalone request, a decision; and the signed e-mail links.

Every approval route needs `X-Tenant-ID` (400 naming the header when missing; 403 when it is not one of
the token's tenants); another tenant's approval is not found (404). The signed links are the exception:
a person clicking in their inbox has no token and no header; the link itself is signed, names its tenant,
approval, assignee and decision, and expires with the approval.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from api.auth import OPS_ROLES, Principal, require, tenant_from_header
from api.openapi import Endpoint
from api.params import Choice, Integer, Text
from api.problems import Problem, problem_response
from api.request_rules import refuse_text
from api.requests import engine, json_body
from domain.core.models import ApprovalStatus, HitlApproval, HitlApprovalCallback
from domain.core.settings import Settings
from domain.core.store import read_transaction, transaction
from domain.workflows import approvals, decision_fields
from domain.workflows.approval_links import LINK_PATH, ExpiredLink, InvalidLink, verify
from domain.workflows.decision_fields import FieldValuesInvalid
from domain.workflows.definition_errors import DefinitionInvalid

# Who may use the approval routes at all (each in the request's tenant). Deciding further needs to be an
# assignee, or ops_admin/admin; opening a standalone request needs one of REQUEST_ROLES.
HITL_ROLES = OPS_ROLES | {"approver", "service"}
REQUEST_ROLES = frozenset({"service", "ops_admin", "admin"})
PREFIXES = ("/hitl", "/v1/hitl")
MAX_LIMIT = 200
STATUS = Choice("status", [s.value for s in ApprovalStatus])
MINE = Choice("mine", ["true", "false", "1", "0"], "false", description="only approvals assigned to you")
LIMIT = Integer("limit", 50, 1, MAX_LIMIT)
OFFSET = Integer("offset", 0, 0, 10**9)
EXECUTION = Text("execution_id", description="only approvals of this workflow execution")
TOKEN = Text("token", description="the signed link's token (a form field on POST also carries it)")


class AuditEntry(BaseModel):
    action: str
    actor_type: str
    actor_id: str
    previous_status: str | None
    new_status: str | None
    reason: str | None
    metadata: dict[str, Any]
    created_at: dt.datetime


class CallbackOut(BaseModel):
    url: str
    status: str
    attempts: int
    last_error: str | None
    delivered_at: dt.datetime | None


class ApprovalOut(BaseModel):
    id: str
    tenant_id: str
    workflow_execution_id: str | None
    step_name: str | None
    status: str
    outcome: str | None
    requested_by: str
    assignees: list[str]
    message: str
    context: dict[str, Any]
    expires_at: dt.datetime
    on_timeout: str
    on_reject: str
    callback_url: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    decision_comment: str | None
    fields: list[dict[str, Any]] = Field(description="the decision fields it asks for, as declared")
    field_values: dict[str, Any] | None = Field(
        description="the values its decision recorded (a timeout's: the defaults); null until then"
    )
    created_at: dt.datetime
    audit: list[AuditEntry] | None = None
    callback: CallbackOut | None = None


class ApprovalList(BaseModel):
    items: list[ApprovalOut]
    next_offset: int | None


class StandaloneRequest(BaseModel):
    """A standalone approval request from another service."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=5000)
    # Each a user id or 'role:<name>', not blank (the validator below says the rest).
    assignees: list[Annotated[str, Field(pattern=r"\S")]] = Field(min_length=1, max_length=100)
    timeout: dt.timedelta | None = Field(default=None, description="ISO 8601 duration, e.g. PT4H")
    on_timeout: Literal["approve", "reject", "fail"] = "reject"
    context: dict[str, Any] = Field(default_factory=dict)
    callback_url: AnyHttpUrl | None = None
    fields: list[Any] = Field(
        default_factory=list,
        description="decision fields: {name, type: string|number|boolean|choice, label, required, options, "
        "default, help}",
    )

    @field_validator("assignees")
    @classmethod
    def _named(cls, assignees: list[str]) -> list[str]:
        for assignee in assignees:
            if not assignee.strip() or assignee.strip() == approvals.ROLE_PREFIX.rstrip(":"):
                raise ValueError("each assignee is a user id or 'role:<name>'")
            if assignee.startswith(approvals.ROLE_PREFIX) and not assignee[len(approvals.ROLE_PREFIX) :].strip():
                raise ValueError("a role assignee is 'role:<name>'")
        return [a.strip() for a in assignees]

    @field_validator("timeout")
    @classmethod
    def _positive(cls, timeout: dt.timedelta | None) -> dt.timedelta | None:
        if timeout is not None and timeout <= dt.timedelta(0):
            raise ValueError("the timeout must be a positive ISO 8601 duration")
        return timeout


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=2000)
    fields: dict[str, Any] = Field(default_factory=dict, description="the values of the approval's decision fields")


def view(session: Any, row: HitlApproval, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = ApprovalOut.model_validate(row, from_attributes=True).model_dump(
        mode="json", exclude={"audit", "callback"}
    )
    if detail:
        out["audit"] = [
            AuditEntry.model_validate(
                {
                    "action": a.action,
                    "actor_type": a.actor_type,
                    "actor_id": a.actor_id,
                    "previous_status": a.previous_status,
                    "new_status": a.new_status,
                    "reason": a.reason,
                    "metadata": a.details,
                    "created_at": a.created_at,
                }
            ).model_dump(mode="json")
            for a in approvals.audit_trail(session, row)
        ]
        callback = approvals_callback(session, row)
        out["callback"] = (
            None
            if callback is None
            else CallbackOut.model_validate(callback, from_attributes=True).model_dump(mode="json")
        )
    return out


def approvals_callback(session: Any, row: HitlApproval) -> HitlApprovalCallback | None:
    return session.scalars(  # type: ignore[no-any-return]
        select(HitlApprovalCallback).where(
            HitlApprovalCallback.tenant_id == row.tenant_id, HitlApprovalCallback.hitl_approval_id == row.id
        )
    ).one_or_none()


def not_found(approval_id: str) -> Problem:
    return Problem(404, "not_found", f"approval {approval_id} not found")


def _caller(request: Request, roles: frozenset[str] = HITL_ROLES) -> tuple[Principal, str]:
    """The caller and the tenant of `X-Tenant-ID` (checked first: a missing header is 400 whoever
    calls), holding one of `roles` there."""
    principal = require(request, HITL_ROLES)
    tenant = tenant_from_header(request, principal)
    if not principal.roles_in(tenant) & roles:
        raise Problem(403, "forbidden", f"one of the roles {sorted(roles)} is required in tenant {tenant}")
    return principal, tenant


async def list_approvals(request: Request) -> JSONResponse:
    principal, tenant = _caller(request)
    status = STATUS.read(request)
    mine = MINE.read(request)
    limit, offset = LIMIT.read(request), OFFSET.read(request)
    assert limit is not None and offset is not None
    execution_id = EXECUTION.read(request)
    assigned_to = approvals.assignee_keys(principal.sub, principal.roles_in(tenant)) if mine in ("true", "1") else None

    def load() -> dict[str, Any]:
        with read_transaction(engine(request)) as session:
            page = approvals.list_approvals(
                session,
                tenant,
                status=status,
                execution_id=execution_id,
                assigned_to=assigned_to,
                limit=limit,
                offset=offset,
            )
            return {"items": [view(session, row) for row in page.items], "next_offset": page.next_offset}

    return JSONResponse(await run_in_threadpool(load))


async def get_approval(request: Request) -> JSONResponse:
    _principal, tenant = _caller(request)
    approval_id = request.path_params["approval_id"]

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            row = approvals.get(session, tenant, approval_id)
            return None if row is None else view(session, row, detail=True)

    found = await run_in_threadpool(load)
    if found is None:
        raise not_found(approval_id)
    return JSONResponse(found)


async def create_approval(request: Request) -> JSONResponse:
    principal, tenant = _caller(request, REQUEST_ROLES)
    body = await json_body(request, StandaloneRequest)
    settings: Settings = request.app.state.settings
    if body.callback_url is not None and not approvals.callback_host_allowed(
        body.callback_url.host or "", settings.approval_callback_hosts
    ):
        message = f"host {body.callback_url.host!r} is not one of APPROVAL_CALLBACK_HOSTS"
        raise Problem(
            422, "validation_error", f"callback_url: {message}", errors=[{"field": "callback_url", "message": message}]
        )
    try:
        fields = decision_fields.parse_fields(body.fields, "fields", settings)
    except DefinitionInvalid as exc:
        raise invalid(exc) from None

    def apply() -> dict[str, Any]:
        with transaction(engine(request)) as session:
            row = approvals.open_approval(
                session,
                tenant_id=tenant,
                requested_by=principal.sub,
                assignees=body.assignees,
                message=body.message,
                timeout=body.timeout or dt.timedelta(seconds=settings.hitl_default_timeout_s),
                on_timeout=body.on_timeout,
                context=body.context,
                callback_url=str(body.callback_url) if body.callback_url else None,
                fields=fields,
                settings=settings,
            )
            return view(session, row)

    created = await run_in_threadpool(apply)
    prefix = "/v1/hitl" if request.url.path.startswith("/v1/") else "/hitl"
    return JSONResponse(created, status_code=201, headers={"Location": f"{prefix}/approvals/{created['id']}"})


def invalid(exc: DefinitionInvalid | FieldValuesInvalid) -> Problem:
    """A 422 naming each refused field (`fields[0].type`, `fields.<name>`)."""
    return Problem(422, "validation_error", str(exc), errors=exc.errors)


def already_decided(row: HitlApproval, status_code: int = 409, code: str = "approval_already_decided") -> Problem:
    return Problem(
        status_code,
        code,
        f"approval {row.id} is already {row.status}"
        + (f" (outcome {row.outcome})" if row.outcome else "")
        + (f" by {row.decided_by}" if row.decided_by else ""),
        extra={"current_status": row.status, "outcome": row.outcome, "decided_by": row.decided_by},
    )


async def decide(request: Request) -> JSONResponse:
    principal, tenant = _caller(request)
    approval_id = request.path_params["approval_id"]
    body = await json_body(request, DecisionRequest)

    def apply() -> tuple[bool, dict[str, Any], HitlApproval]:
        with transaction(engine(request)) as session:
            try:
                result = approvals.decide(
                    session,
                    tenant_id=tenant,
                    approval_id=approval_id,
                    decision=body.decision,
                    user_id=principal.sub,
                    roles=principal.roles_in(tenant),
                    comment=body.comment,
                    fields=body.fields,
                    settings=request.app.state.settings,
                )
            except approvals.ApprovalNotFound:
                raise not_found(approval_id) from None
            except FieldValuesInvalid as exc:
                raise invalid(exc) from None
            except approvals.NotAnAssignee:
                raise Problem(
                    403, "forbidden", f"only an assignee of approval {approval_id} (or ops_admin/admin) may decide"
                ) from None
            # A late decision may have expired the approval: that is committed, then refused.
            return result.won, view(session, result.approval), result.approval

    won, out, row = await run_in_threadpool(apply)
    if not won:
        raise already_decided(row)
    return JSONResponse(out)


# -- signed links ----------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}
blockquote{{white-space:pre-wrap;border-left:3px solid #ccc;margin:1rem 0;padding-left:1rem}}
button{{font-size:1rem;padding:.5rem 1.25rem}}textarea{{width:100%}}</style></head>
<body><h1>{title}</h1>{content}</body></html>"""


def page(title: str, content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), content=content), status_code=status_code)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def link_problem(request: Request, problem: Problem) -> Response:
    """A link's error: a page for a browser, problem+json for anything else."""
    if wants_html(request):
        return page(
            {401: "This link is not valid", 410: "This link can no longer be used"}.get(problem.status, "Not found"),
            f"<p>{html.escape(problem.detail or problem.code)}</p>",
            problem.status,
        )
    return problem_response(request, problem)


async def _token(request: Request) -> tuple[str, str | None]:
    token = request.query_params.get("token", "")
    comment = None
    if request.method == "POST":
        raw = (await request.body()).decode("utf-8", "replace")
        form = parse_qs(raw) if "json" not in request.headers.get("content-type", "") else {}
        token = token or (form.get("token") or [""])[0]
        comments = form.get("comment")
        comment = comments[0] if comments else None
        if comment is not None:
            refuse_text(comment, "comment")
    return token, comment


def _claims(request: Request, token: str) -> Any:
    settings: Settings = request.app.state.settings
    if not token:
        raise Problem(401, "invalid_link", "the link has no token")
    try:
        return verify(settings, token)
    except InvalidLink:
        raise Problem(401, "invalid_link", "this link is not valid (it was altered or not issued here)") from None
    except ExpiredLink:
        raise Problem(410, "link_expired", "this link has expired") from None


async def show_link(request: Request) -> Response:
    token, _ = await _token(request)
    try:
        claims = _claims(request, token)
    except Problem as problem:
        return link_problem(request, problem)

    def load() -> HitlApproval | None:
        with read_transaction(engine(request)) as session:
            return approvals.get(session, claims.tenant_id, claims.approval_id)

    row = await run_in_threadpool(load)
    if row is None:
        return link_problem(request, not_found(claims.approval_id))
    if row.status != ApprovalStatus.PENDING.value:
        return link_problem(request, already_decided(row, 410, "link_used"))
    verb = "Approve" if claims.decision == "approve" else "Reject"
    content = (
        f"<p>{html.escape(row.requested_by)} asks for your decision:</p>"
        f"<blockquote>{html.escape(row.message)}</blockquote>"
        f"<p>Expires at {html.escape(row.expires_at.isoformat())}; "
        f"then <b>{html.escape(row.on_timeout)}</b> applies.</p>"
        f'<form method="post" action="{html.escape(request.url.path)}?token={quote(token)}">'
        '<p><label>Comment (optional)<br><textarea name="comment" rows="3" maxlength="2000"></textarea></label></p>'
        f'<button type="submit">{verb}</button></form>'
    )
    return page(f"{verb} this request?", content)


async def use_link(request: Request) -> Response:
    token, comment = await _token(request)
    try:
        claims = _claims(request, token)
    except Problem as problem:
        return link_problem(request, problem)

    def apply() -> tuple[str, HitlApproval | None]:
        with transaction(engine(request)) as session:
            try:
                result = approvals.decide(
                    session,
                    tenant_id=claims.tenant_id,
                    approval_id=claims.approval_id,
                    decision=claims.decision,
                    user_id=claims.user_id,
                    roles=approvals.roles_of(session, claims.tenant_id, claims.user_id),
                    comment=(comment or "").strip()[:2000] or None,
                    via="signed_link",
                    metadata={"link": claims.nonce},
                )
            except approvals.ApprovalNotFound:
                return "not_found", None
            except approvals.NotAnAssignee:
                return "forbidden", None
            return ("decided" if result.won else "gone"), result.approval

    outcome, row = await run_in_threadpool(apply)
    if outcome == "forbidden":
        return link_problem(request, Problem(403, "forbidden", "you are no longer an assignee of this approval"))
    if row is None:
        return link_problem(request, not_found(claims.approval_id))
    if outcome == "gone":
        return link_problem(request, already_decided(row, 410, "link_used"))
    done = "approved" if row.status == ApprovalStatus.APPROVED.value else "rejected"
    return page(f"Request {done}", f"<p>Thank you: the request is {done}. You can close this page.</p>")


LINK_ERRORS = {401: ["invalid_link"], 403: ["forbidden"], 404: ["not_found"], 410: ["link_expired", "link_used"]}
ENDPOINTS: list[Endpoint] = []
for _prefix in PREFIXES:
    ENDPOINTS += [
        Endpoint(
            "GET",
            f"{_prefix}/approvals",
            list_approvals,
            "Approvals of the tenant, newest first (status, execution_id, mine=true: assigned to you)",
            response=ApprovalList,
            tenant_header=True,
            tenant_required=True,
            query=[STATUS, EXECUTION, MINE, LIMIT, OFFSET],
            tags=["approvals"],
        ),
        Endpoint(
            "POST",
            f"{_prefix}/approvals",
            create_approval,
            "A standalone approval request (another service), with an optional callback URL called on decision",
            request=StandaloneRequest,
            response=ApprovalOut,
            status=201,
            tenant_header=True,
            tenant_required=True,
            tags=["approvals"],
        ),
        Endpoint(
            "GET",
            f"{_prefix}/approvals/{{approval_id}}",
            get_approval,
            "One approval with its audit trail (and its callback's delivery)",
            response=ApprovalOut,
            tenant_header=True,
            tenant_required=True,
            errors={404: ["not_found"]},
            tags=["approvals"],
        ),
        Endpoint(
            "POST",
            f"{_prefix}/approvals/{{approval_id}}/decision",
            decide,
            "Decide (assignees, ops_admin, admin): exactly one decision wins; later ones get 409",
            request=DecisionRequest,
            response=ApprovalOut,
            tenant_header=True,
            tenant_required=True,
            errors={404: ["not_found"], 409: ["approval_already_decided"]},
            tags=["approvals"],
        ),
    ]
    _links = LINK_PATH.replace("/hitl", _prefix, 1)
    ENDPOINTS += [
        Endpoint(
            "GET",
            _links,
            show_link,
            "A signed e-mail link: a confirmation page (the link is not used yet); problems are pages too "
            "when the caller accepts text/html",
            media_type="text/html",
            auth=False,
            query=[TOKEN],
            errors=LINK_ERRORS,
            tags=["approvals"],
        ),
        Endpoint(
            "POST",
            _links,
            use_link,
            "A signed e-mail link, confirmed (a form: token, comment): decides once; a used or expired link "
            "is 410, a tampered one 401",
            media_type="text/html",
            auth=False,
            query=[TOKEN],
            errors=LINK_ERRORS,
            tags=["approvals"],
        ),
    ]

"""The approvals inbox: server-rendered pages under /hitl for the people who decide (the signed e-mail
links' pages, api/routes/approval_links.py, use the same templates and views).

- `/hitl/login` (GET the form, POST a pasted API token), `/hitl/logout` (POST): the session cookie
  (api/hitl_session.py);
- `/hitl`: the pending approvals this person may decide in the chosen tenant (`/hitl/tenant` POST
  chooses among theirs), newest first, a page at a time;
- `/hitl/approvals/{id}`: GET from a browser (text/html, no bearer token) is the approval's page
  (workflow, progress, message, context, the decision form or the outcome, the audit trail); any other
  GET is the JSON API's (api/routes/approvals.py); the form posts to `/hitl/approvals/{id}/decide`
  (outside the API's paths, so the API's methods stay its own).

Every form POST needs the session's CSRF token (403 page otherwise, nothing done). Another tenant's
approval is a 404 page, as an unknown one is. A decision another person made first is the same page
with a message saying who decided and when (409).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from api import hitl_session
from api.auth import Authenticator, Principal
from api.hitl_session import CSRF_FIELD, CsrfRefused, HitlSession
from api.pages import message_page, read_form, render, wants_page
from api.problems import Problem
from api.requests import engine
from api.routes import approvals as approval_routes
from api.routing import SegmentRoute
from domain.core.models import ApprovalStatus, HitlApproval, Tenant, Workflow, WorkflowExecution
from domain.core.settings import Settings
from domain.core.store import read_transaction, transaction
from domain.workflows import approvals, decision_fields, workflows
from domain.workflows.decision_fields import DecisionField, FieldValuesInvalid

HOME, LOGIN = "/hitl", "/hitl/login"
COMMENT_MAX = 2000


# -- what the pages show -------------------------------------------------------------------------------


def inbox_tenants(principal: Principal) -> list[str]:
    """The person's tenants where they hold a role that may use the approvals."""
    return sorted(t for t in principal.tenants if principal.roles_in(t) & approval_routes.HITL_ROLES)


def outcome_text(row: HitlApproval) -> str:
    """What happened to an approval that left pending, in a sentence: "Already approved by X at T"."""
    when = f" at {row.decided_at.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}" if row.decided_at else ""
    if row.status == ApprovalStatus.EXPIRED.value:
        return f"This request already expired{when}; its timeout applied {row.outcome}."
    if row.status == ApprovalStatus.CANCELLED.value:
        return "This request was cancelled with its workflow execution."
    by = f" by {row.decided_by}" if row.decided_by else ""
    return f"Already {row.status}{by}{when}."


def _workflow_names(session: Session, tenant_id: str, execution_ids: list[str]) -> dict[str, str]:
    if not execution_ids:
        return {}
    rows = session.execute(
        select(WorkflowExecution.id, Workflow.name)
        .join(
            Workflow,
            (Workflow.tenant_id == WorkflowExecution.tenant_id) & (Workflow.id == WorkflowExecution.workflow_id),
        )
        .where(WorkflowExecution.tenant_id == tenant_id, WorkflowExecution.id.in_(execution_ids))
    ).all()
    return {execution_id: name for execution_id, name in rows}


def approval_view(session: Session, row: HitlApproval) -> dict[str, Any]:
    """An approval as its page shows it: the row, its workflow and execution's progress, its audit."""
    execution = None
    workflow = None
    if row.workflow_execution_id is not None:
        found = workflows.find_execution(session, row.tenant_id, row.workflow_execution_id)
        if found is not None:
            steps = workflows.execution_steps(session, found.id)
            execution = {
                "id": found.id,
                "status": found.status,
                "progress": workflows.progress(steps),
                "steps": [{"name": s.name, "kind": s.kind, "status": s.status} for s in steps],
            }
            name = _workflow_names(session, row.tenant_id, [found.id]).get(found.id)
            workflow = {"id": found.workflow_id, "name": name or found.workflow_id}
    return {
        "approval": {
            "id": row.id,
            "status": row.status,
            "outcome": row.outcome,
            "message": row.message,
            "context": row.context,
            "requested_by": row.requested_by,
            "step_name": row.step_name,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "on_timeout": row.on_timeout,
            "decided_by": row.decided_by,
            "decided_at": row.decided_at,
            "decision_comment": row.decision_comment,
        },
        "fields": decision_fields.declared(row),
        "field_values": [
            (field.label, (row.field_values or {}).get(field.name))
            for field in decision_fields.declared(row)
            if row.field_values is not None
        ],
        "workflow": workflow,
        "execution": execution,
        "audit": [
            {
                "created_at": a.created_at,
                "action": a.action,
                "new_status": a.new_status,
                "actor_id": a.actor_id,
                "reason": a.reason,
            }
            for a in approvals.audit_trail(session, row)
        ],
        "pending": row.status == ApprovalStatus.PENDING.value,
        "outcome_text": outcome_text(row),
    }


@dataclass(frozen=True)
class Form:
    """The decision form as a page shows it: where it posts, what it carries, what was entered."""

    action: str
    hidden: dict[str, str]
    fields: list[DecisionField]
    decisions: tuple[str, ...] = ("approve", "reject")
    values: dict[str, str] | None = None
    errors: dict[str, str] | None = None

    def shown(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "hidden": self.hidden,
            "decisions": self.decisions,
            "fields": self.fields,
            "entered": self.values or {},
            "errors": self.errors or {},
        }


def comment_of(form: dict[str, str]) -> tuple[str | None, str | None]:
    """The form's comment (None when blank) and what is wrong with it, if anything."""
    comment = form.get("comment", "").strip()
    if len(comment) > COMMENT_MAX:
        return None, f"at most {COMMENT_MAX} characters ({len(comment)} entered)"
    return comment or None, None


# -- the session's pages ------------------------------------------------------------------------------


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def page_base(session: HitlSession | None) -> dict[str, Any]:
    return {
        "principal": session.principal if session else None,
        "csrf": session.csrf if session else "",
        "now": dt.datetime.now(dt.UTC),
    }


def _to_login(back_to: str | None = None) -> RedirectResponse:
    """To the sign-in form, which brings the person back to `back_to` (a page of the inbox) after."""
    return RedirectResponse(LOGIN + (f"?next={quote(back_to)}" if back_to else ""), status_code=303)


def back_to(raw: str | None) -> str:
    """Where to go after signing in: a page of the inbox named by `next`, never anywhere else."""
    if raw and (raw == HOME or raw.startswith(HOME + "/")) and "//" not in raw and "\\" not in raw:
        return raw
    return HOME


def _csrf_refused(request: Request, session: HitlSession | None, why: str) -> Response:
    return message_page(
        request,
        403,
        "This form cannot be accepted",
        f"{why}. Nothing was done: reload the page and try again.",
        **page_base(session if session and session.signed_in else None),
    )


def _current_tenant(session: HitlSession) -> str | None:
    assert session.principal is not None
    mine = inbox_tenants(session.principal)
    return session.tenant if session.tenant in mine else (mine[0] if mine else None)


async def login_page(request: Request) -> Response:
    settings = settings_of(request)
    session = hitl_session.read(request)
    after = back_to(request.query_params.get("next"))
    if session is not None and session.signed_in:
        return RedirectResponse(after, status_code=303)
    session = session or hitl_session.new_session(settings)
    response = render(
        request, "login.html", {"title": "Sign in", **page_base(session), "principal": None, "next": after}
    )
    return hitl_session.store(response, settings, session)


async def login(request: Request) -> Response:
    settings = settings_of(request)
    session = hitl_session.read(request)
    form = await read_form(request)
    try:
        hitl_session.check_csrf(request, session, form)
    except CsrfRefused as refused:
        return _csrf_refused(request, None, str(refused).capitalize())
    assert session is not None
    authenticator: Authenticator = request.app.state.authenticator
    try:
        principal = authenticator.verify(form.get("token", "").strip())
    except Problem as problem:
        page = render(
            request,
            "login.html",
            {
                "title": "Sign in",
                **page_base(session),
                "principal": None,
                "next": back_to(form.get("next")),
                "error": f"This token is refused: {problem.detail}",
            },
            401,
        )
        return page
    mine = inbox_tenants(principal)
    signed_in = hitl_session.signed_in(settings, principal, mine[0] if mine else None)
    request.state.actor = principal.sub
    return hitl_session.store(RedirectResponse(back_to(form.get("next")), status_code=303), settings, signed_in)


async def logout(request: Request) -> Response:
    session = hitl_session.read(request)
    form = await read_form(request)
    try:
        hitl_session.check_csrf(request, session, form)
    except CsrfRefused as refused:
        return _csrf_refused(request, session, str(refused).capitalize())
    return hitl_session.forget(RedirectResponse(LOGIN, status_code=303), settings_of(request))


async def choose_tenant(request: Request) -> Response:
    session = hitl_session.read(request)
    if session is None or not session.signed_in:
        return _to_login()
    assert session.principal is not None
    form = await read_form(request)
    try:
        hitl_session.check_csrf(request, session, form)
    except CsrfRefused as refused:
        return _csrf_refused(request, session, str(refused).capitalize())
    tenant = form.get("tenant", "")
    if tenant not in inbox_tenants(session.principal):
        return message_page(
            request, 404, "Not found", "You have no approvals to see in that tenant.", **page_base(session)
        )
    chosen = hitl_session.with_tenant(session, tenant)
    return hitl_session.store(RedirectResponse(HOME, status_code=303), settings_of(request), chosen)


async def inbox(request: Request) -> Response:
    session = hitl_session.read(request)
    if session is None or not session.signed_in:
        return _to_login()
    principal = session.principal
    assert principal is not None
    request.state.actor = principal.sub
    try:
        limit, offset = approval_routes.LIMIT.read(request), approval_routes.OFFSET.read(request)
    except Problem as problem:
        return message_page(request, 422, "This page does not exist", problem.detail or "", **page_base(session))
    assert limit is not None and offset is not None
    tenant = _current_tenant(session)
    context: dict[str, Any] = {
        "title": "Approvals",
        **page_base(session),
        "tenants": inbox_tenants(principal),
        "tenant": tenant,
        "approvals": [],
        "limit": limit,
        "next_offset": None,
        "previous_offset": max(0, offset - limit) if offset > 0 else None,
    }
    if tenant is not None:
        request.state.tenant_id = tenant
        roles = principal.roles_in(tenant)
        # ops_admin and admin may decide any approval of the tenant; others those naming them or their roles.
        assigned_to = None if roles & approvals.DECIDE_ANY_ROLES else approvals.assignee_keys(principal.sub, roles)

        def load() -> tuple[list[dict[str, Any]], int | None]:
            with read_transaction(engine(request)) as db:
                page = approvals.list_approvals(
                    db,
                    tenant,
                    status=ApprovalStatus.PENDING.value,
                    assigned_to=assigned_to,
                    limit=limit,
                    offset=offset,
                )
                names = _workflow_names(
                    db, tenant, [r.workflow_execution_id for r in page.items if r.workflow_execution_id]
                )
                items = [
                    {
                        "id": r.id,
                        "summary": approvals.summary(r.message),
                        "workflow": names.get(r.workflow_execution_id or ""),
                        "step_name": r.step_name,
                        "requested_by": r.requested_by,
                        "created_at": r.created_at,
                        "expires_at": r.expires_at,
                    }
                    for r in page.items
                ]
                return items, page.next_offset

        context["approvals"], context["next_offset"] = await run_in_threadpool(load)

    def tenant_names() -> dict[str, str]:
        with read_transaction(engine(request)) as db:
            rows = db.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(context["tenants"]))).all()
            return {tenant_id: name for tenant_id, name in rows}

    context["tenant_names"] = await run_in_threadpool(tenant_names) if context["tenants"] else {}
    response = render(request, "inbox.html", context)
    if tenant != session.tenant and tenant is not None:
        hitl_session.store(response, settings_of(request), hitl_session.with_tenant(session, tenant))
    return response


def _not_found(request: Request, session: HitlSession | None) -> Response:
    return message_page(request, 404, "Not found", "There is no such approval.", **page_base(session))


def page_path(approval_id: str) -> str:
    return f"/hitl/approvals/{quote(approval_id, safe='')}"


def decide_path(approval_id: str) -> str:
    return page_path(approval_id) + "/decide"


async def approval(request: Request) -> Response:
    """The approval's page for a browser; any other caller gets the JSON API's answer."""
    if not wants_page(request):
        return await approval_routes.get_approval(request)
    session = hitl_session.read(request)
    if session is None or not session.signed_in:
        return _to_login(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    principal = session.principal
    assert principal is not None
    request.state.actor = principal.sub
    # `?tenant=` (the e-mail's link names the approval's) chooses among the person's tenants.
    asked = request.query_params.get("tenant")
    chose = bool(asked) and asked in inbox_tenants(principal) and asked != session.tenant
    if chose:
        session = hitl_session.with_tenant(session, str(asked))
    tenant = _current_tenant(session)
    approval_id = request.path_params["approval_id"]
    if tenant is None:
        return _not_found(request, session)
    request.state.tenant_id = tenant
    roles = principal.roles_in(tenant)
    action = decide_path(approval_id)

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as db:
            row = approvals.get(db, tenant, approval_id)
            if row is None:
                return None
            shown = approval_view(db, row)
            shown["may_decide"] = approvals.may_decide(row, principal.sub, roles)
            return shown

    shown = await run_in_threadpool(load)
    response = (
        _not_found(request, session)
        if shown is None
        else approval_page(request, session, shown, Form(action, {CSRF_FIELD: session.csrf}, shown["fields"]))
    )
    if chose:
        hitl_session.store(response, settings_of(request), session)
    return response


async def decide_form(request: Request) -> Response:
    """The decision form's POST: then the approval's page (303), or the form again (422), or the
    decision someone made first (409)."""
    session = hitl_session.read(request)
    if session is None or not session.signed_in:
        return _to_login()
    principal = session.principal
    assert principal is not None
    request.state.actor = principal.sub
    form = await read_form(request)
    try:
        hitl_session.check_csrf(request, session, form)
    except CsrfRefused as refused:
        return _csrf_refused(request, session, str(refused).capitalize())
    tenant = _current_tenant(session)
    approval_id = request.path_params["approval_id"]
    if tenant is None:
        return _not_found(request, session)
    request.state.tenant_id = tenant
    return await _decide(request, session, tenant, approval_id, form)


def approval_page(
    request: Request,
    session: HitlSession | None,
    shown: dict[str, Any],
    form: Form | None,
    *,
    notice: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The approval's page: the decision form while it is pending and this person may decide."""
    title = "Decide this request" if shown["pending"] else "Request " + shown["approval"]["status"]
    context: dict[str, Any] = {"title": title, **page_base(session), **shown, "notice": notice}
    if shown["pending"] and shown.get("may_decide", True) and form is not None:
        context["form"] = form.shown()
    elif shown["pending"]:
        context["cannot_decide"] = "You are not an assignee of this request, so you can only read it."
    return render(request, "approval.html", context, status_code)


@dataclass(frozen=True)
class FormDecision:
    """What a decision form's POST came to: `decided`, `conflict` (someone decided first), `invalid`
    (`errors` by input name), `forbidden` or `not_found`; `shown` the approval as it now stands."""

    outcome: str
    shown: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def decide_from_form(
    db: Session,
    *,
    tenant_id: str,
    approval_id: str,
    decision: str,
    user_id: str,
    roles: frozenset[str],
    form: dict[str, str],
    via: str,
    settings: Settings,
    metadata: dict[str, Any] | None = None,
) -> FormDecision:
    """A decision from a page's form (the inbox's or a signed link's), in the caller's transaction: the
    comment and the decision fields' inputs checked while the approval is pending; once it is not, the
    decision someone made first is what the page shows."""
    row = approvals.get(db, tenant_id, approval_id)
    if row is None:
        return FormDecision("not_found")
    if not approvals.may_decide(row, user_id, roles):
        return FormDecision("forbidden")
    if row.status != ApprovalStatus.PENDING.value:
        return FormDecision("conflict", approval_view(db, row))
    comment, comment_error = comment_of(form)
    errors = {"comment": comment_error} if comment_error else {}
    if decision not in approvals.DECISION_STATUS:
        errors["decision"] = "choose Approve or Reject"
        return FormDecision("invalid", approval_view(db, row), errors)
    values = None
    try:
        values = decision_fields.values_from_form(decision_fields.declared(row), form, decision, settings)
    except FieldValuesInvalid as exc:
        errors.update({e["field"]: e["message"] for e in exc.errors})
    if errors:
        return FormDecision("invalid", approval_view(db, row), errors)
    result = approvals.decide(
        db,
        tenant_id=tenant_id,
        approval_id=approval_id,
        decision=decision,  # type: ignore[arg-type]
        user_id=user_id,
        roles=roles,
        comment=comment,
        via=via,
        metadata=metadata,
        fields=values,
        settings=settings,
    )
    return FormDecision("decided" if result.won else "conflict", approval_view(db, result.approval))


def _entered(form: dict[str, str]) -> dict[str, str]:
    """What the person typed, to show the form again (never its hidden tokens)."""
    return {name: value for name, value in form.items() if name not in (CSRF_FIELD, "token", "decision")}


def form_answer(
    request: Request, session: HitlSession | None, decided: FormDecision, form: dict[str, str], again: Form
) -> Response:
    """The page after a form's POST that did not decide: the one someone made first (409), or the form
    again with what was entered and each error beside its input (422)."""
    assert decided.shown is not None
    if decided.outcome == "conflict":
        notice = {"kind": "bad", "id": "conflict", "text": decided.shown["outcome_text"]}
        return approval_page(request, session, decided.shown, None, notice=notice, status_code=409)
    notice = {"kind": "bad", "id": "form-errors", "text": "Please correct the marked fields."}
    if "decision" in decided.errors:
        notice["text"] = "Choose Approve or Reject."
    form_again = replace(again, values=_entered(form), errors=decided.errors)
    return approval_page(request, session, decided.shown, form_again, notice=notice, status_code=422)


async def _decide(
    request: Request, session: HitlSession, tenant: str, approval_id: str, form: dict[str, str]
) -> Response:
    principal = session.principal
    assert principal is not None

    def apply() -> FormDecision:
        with transaction(engine(request)) as db:
            return decide_from_form(
                db,
                tenant_id=tenant,
                approval_id=approval_id,
                decision=form.get("decision", ""),
                user_id=principal.sub,
                roles=principal.roles_in(tenant),
                form=form,
                via="inbox",
                settings=settings_of(request),
            )

    decided = await run_in_threadpool(apply)
    if decided.outcome == "forbidden":
        return message_page(
            request, 403, "Not allowed", "You are not an assignee of this request.", **page_base(session)
        )
    if decided.outcome == "not_found":
        return _not_found(request, session)
    if decided.outcome == "decided":
        return RedirectResponse(page_path(approval_id), status_code=303)
    shown = decided.shown
    assert shown is not None
    again = Form(decide_path(approval_id), {CSRF_FIELD: session.csrf}, shown["fields"])
    return form_answer(request, session, decided, form, again)


# The inbox's pages: for browsers, outside the OpenAPI document. Before the API's routes, so a browser's
# GET of /hitl/approvals/{id} reaches the page (which hands any other caller to the JSON API).
ROUTES: list[BaseRoute] = [
    SegmentRoute(HOME, inbox, methods=["GET"], include_in_schema=False),
    SegmentRoute(LOGIN, login_page, methods=["GET"], include_in_schema=False),
    SegmentRoute(LOGIN, login, methods=["POST"], include_in_schema=False),
    SegmentRoute("/hitl/logout", logout, methods=["POST"], include_in_schema=False),
    SegmentRoute("/hitl/tenant", choose_tenant, methods=["POST"], include_in_schema=False),
    SegmentRoute("/hitl/approvals/{approval_id}", approval, methods=["GET"], include_in_schema=False),
    SegmentRoute("/hitl/approvals/{approval_id}/decide", decide_form, methods=["POST"], include_in_schema=False),
]

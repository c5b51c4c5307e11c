"""The signed e-mail links' pages (`/hitl/links/...`): a person with no session opens the link the
approval's e-mail carries and decides on the inbox's templates (api/routes/inbox.py renders them). The
link itself is signed, names its tenant, approval and decision, and is used once: a used link is 410
saying who decided and when, an altered one 401, an expired one 410. A browser gets pages, any other
caller problem+json."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.openapi import Endpoint
from api.pages import message_page, read_form, wants_page
from api.params import Text
from api.problems import Problem, problem_response
from api.requests import engine
from api.routes import approvals as approval_routes
from api.routes.inbox import (
    Form,
    FormDecision,
    approval_page,
    approval_view,
    decide_from_form,
    form_answer,
    page_base,
    settings_of,
)
from domain.core.models import ApprovalStatus
from domain.core.store import read_transaction, transaction
from domain.workflows import approvals
from domain.workflows.approval_links import LINK_PATH, ExpiredLink, InvalidLink, LinkClaims, verify

TOKEN = Text("token", description="the signed link's token (a form field on POST also carries it)")


def link_problem(request: Request, problem: Problem) -> Response:
    """A link's error: a page for a browser, problem+json for anything else."""
    if wants_page(request):
        title = {401: "This link is not valid", 410: "This link can no longer be used"}.get(problem.status, "Not found")
        return message_page(request, problem.status, title, problem.detail or problem.code, **page_base(None))
    return problem_response(request, problem)


def _claims(request: Request, token: str) -> LinkClaims:
    if not token:
        raise Problem(401, "invalid_link", "the link has no token")
    try:
        return verify(settings_of(request), token)
    except InvalidLink:
        raise Problem(401, "invalid_link", "this link is not valid (it was altered or not issued here)") from None
    except ExpiredLink:
        raise Problem(410, "link_expired", "this link has expired") from None


def _used(shown: dict[str, Any]) -> Problem:
    """A link of an approval no longer pending: 410, saying who decided and when."""
    approval = shown["approval"]
    return Problem(
        410,
        "link_used",
        shown["outcome_text"],
        extra={
            "current_status": approval["status"],
            "outcome": approval["outcome"],
            "decided_by": approval["decided_by"],
        },
    )


def _link_form(request: Request, token: str, claims: LinkClaims, shown: dict[str, Any]) -> Form:
    return Form(
        f"{request.url.path}?token={quote(token)}",
        {"token": token},
        shown["fields"],
        decisions=(claims.decision,),
    )


async def show_link(request: Request) -> Response:
    token = request.query_params.get("token", "")
    try:
        claims = _claims(request, token)
    except Problem as problem:
        return link_problem(request, problem)

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as db:
            row = approvals.get(db, claims.tenant_id, claims.approval_id)
            return None if row is None else approval_view(db, row)

    shown = await run_in_threadpool(load)
    if shown is None:
        return link_problem(request, approval_routes.not_found(claims.approval_id))
    if not shown["pending"]:
        return link_problem(request, _used(shown))
    return approval_page(request, None, shown, _link_form(request, token, claims, shown))


async def use_link(request: Request) -> Response:
    form = await read_form(request) if "json" not in request.headers.get("content-type", "") else {}
    token = request.query_params.get("token", "") or form.get("token", "")
    try:
        claims = _claims(request, token)
    except Problem as problem:
        return link_problem(request, problem)

    def apply() -> FormDecision:
        with transaction(engine(request)) as db:
            return decide_from_form(
                db,
                tenant_id=claims.tenant_id,
                approval_id=claims.approval_id,
                decision=claims.decision,
                user_id=claims.user_id,
                roles=approvals.roles_of(db, claims.tenant_id, claims.user_id),
                form=form,
                via="signed_link",
                settings=settings_of(request),
                metadata={"link": claims.nonce},
            )

    decided = await run_in_threadpool(apply)
    if decided.outcome == "forbidden":
        return link_problem(request, Problem(403, "forbidden", "you are no longer an assignee of this approval"))
    if decided.outcome == "not_found" or decided.shown is None:
        return link_problem(request, approval_routes.not_found(claims.approval_id))
    if decided.outcome == "conflict":
        return link_problem(request, _used(decided.shown))
    if decided.outcome == "invalid":
        if wants_page(request):
            return form_answer(request, None, decided, form, _link_form(request, token, claims, decided.shown))
        errors = [{"field": name, "message": message} for name, message in decided.errors.items()]
        return problem_response(
            request,
            Problem(422, "validation_error", "invalid field(s): " + ", ".join(decided.errors), errors=errors),
        )
    done = "approved" if decided.shown["approval"]["status"] == ApprovalStatus.APPROVED.value else "rejected"
    return message_page(
        request,
        200,
        f"Request {done}",
        f"Thank you: the request is {done}. You can close this page.",
        **page_base(None),
    )


LINK_ERRORS = {
    401: ["invalid_link"],
    403: ["forbidden"],
    404: ["not_found"],
    410: ["link_expired", "link_used"],
    422: ["validation_error"],
}
ENDPOINTS: list[Endpoint] = []
for _prefix in approval_routes.PREFIXES:
    _links = LINK_PATH.replace("/hitl", _prefix, 1)
    ENDPOINTS += [
        Endpoint(
            "GET",
            _links,
            show_link,
            "A signed e-mail link: the approval's page with the link's decision (the link is not used yet); "
            "problems are pages too when the caller accepts text/html",
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

"""The approvals inbox's pages (/hitl): sign-in and its cookie, CSRF, what the list shows, tenancy, the
decision and its audit row, a decision someone made first, escaping, and the signed links' pages."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from http.cookies import SimpleCookie

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from api import hitl_session, pages
from api.app import create_app
from domain.core.models import AuditLog, HitlApproval, Notification
from domain.core.store import transaction
from domain.workflows import approvals, decision_fields
from domain.workflows.approval_links import sign
from tests.api.conftest import bearer, make_token
from tests.domain import factories
from tests.domain.test_approvals import execution, member

HTML = {"Accept": "text/html,application/xhtml+xml"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _open(session, settings, tenant_id, assignees, message="Pay the invoice?", *, run=None, context=None, step="pay"):
    return approvals.open_approval(
        session,
        tenant_id=tenant_id,
        requested_by="workflow_engine",
        assignees=assignees,
        message=message,
        timeout=dt.timedelta(hours=2),
        on_timeout="reject",
        workflow_execution_id=run,
        step_name=step if run else None,
        context=context,
        settings=settings,
    ).id


@pytest.fixture
def world(engine, settings):
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        other = factories.tenant(session)
        alice = member(session, tenant.id, ["approver"], "alice")
        bob = member(session, tenant.id, ["approver", "finance"], "bob")
        stranger = member(session, other.id, ["approver", "ops_admin"], "stranger")
        run = execution(session, tenant.id)
        ids = {
            "tenant": tenant.id,
            "other": other.id,
            "alice": alice.id,
            "bob": bob.id,
            "stranger": stranger.id,
            "execution": run.id,
            "mine": _open(session, settings, tenant.id, [alice.id], "Pay the invoice?", run=run.id),
            "finance": _open(session, settings, tenant.id, ["role:finance"], "Refund the customer?"),
            "bobs": _open(session, settings, tenant.id, [bob.id], "Bob's own request"),
            "foreign": _open(session, settings, other.id, [stranger.id], "Another tenant's request"),
        }
    return ids


@pytest.fixture
def browser(settings, engine):
    """A browser on https (the cookie is Secure), following no redirect unless asked."""
    with TestClient(
        create_app(settings, engine), base_url="https://testserver", raise_server_exceptions=False
    ) as client:
        yield client


def csrf_of(page_html: str) -> str:
    found = CSRF.search(page_html)
    assert found, page_html
    return found.group(1)


def sign_in(browser, settings, sub, tenants, roles, **claims):
    token = make_token(settings, tenants=tenants, roles=roles, sub=sub, **claims)
    form = browser.get("/hitl/login", headers=HTML)
    assert form.status_code == 200
    response = browser.post(
        "/hitl/login", data={"csrf_token": csrf_of(form.text), "token": token}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/hitl", response.text
    return response


def page_of(browser, path):
    response = browser.get(path, headers=HTML, follow_redirects=False)
    return response


def status_of(engine, approval_id):
    with transaction(engine) as session:
        return session.get(HitlApproval, approval_id).status


def test_signing_in_sets_a_signed_httponly_samesite_secure_cookie_for_hitl_that_ends_with_the_token(
    browser, settings, world
):
    response = sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    header = [v for k, v in response.headers.multi_items() if k == "set-cookie"][-1]
    attributes = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in attributes and "secure" in attributes and "samesite=lax" in attributes
    assert "path=/hitl" in attributes
    max_age = int(next(a for a in attributes if a.startswith("max-age=")).split("=")[1])
    assert 0 < max_age <= 5 * 60  # make_token's tokens live 5 minutes: the session no longer
    cookie = SimpleCookie()
    cookie.load(header)
    assert make_token(settings, tenants=[world["tenant"]], roles=["approver"]) not in cookie[hitl_session.COOKIE].value
    inbox = page_of(browser, "/hitl")
    assert inbox.status_code == 200 and world["alice"] in inbox.text


def test_without_secure_cookies_plain_http_development_works(engine, settings, world):
    plain = settings.model_copy(update={"hitl_cookie_secure": False})
    with TestClient(create_app(plain, engine), raise_server_exceptions=False) as client:
        response = sign_in(client, plain, world["alice"], [world["tenant"]], ["approver"])
        assert "secure" not in response.headers["set-cookie"].lower()
        assert page_of(client, "/hitl").status_code == 200


def test_a_refused_token_does_not_sign_in(browser, settings, world):
    form = browser.get("/hitl/login", headers=HTML)
    bad = make_token(settings, tenants=[world["tenant"]], roles=["approver"], key="another-secret-" * 4)
    response = browser.post("/hitl/login", data={"csrf_token": csrf_of(form.text), "token": bad})
    assert response.status_code == 401
    assert (
        'aria-describedby="token-help token-error"' in response.text and "token signature is invalid" in response.text
    )
    assert page_of(browser, "/hitl").headers["location"] == "/hitl/login"


def _set_cookie(browser, value):
    browser.cookies.clear()
    browser.cookies.set(hitl_session.COOKIE, value, path="/hitl")


def test_a_forged_or_expired_cookie_is_refused(browser, settings, world):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    good = browser.cookies.get(hitl_session.COOKIE)
    _set_cookie(browser, good)
    assert page_of(browser, "/hitl").status_code == 200  # the cookie as set is good
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    _set_cookie(browser, forged)
    assert page_of(browser, "/hitl").headers["location"] == "/hitl/login"
    # Signed with our key but over: its token's expiry has passed.
    claims = {"sub": world["alice"], "tenants": [world["tenant"]], "roles": ["approver"], "exp": int(time.time()) - 5}
    over = hitl_session._serializer(settings).dumps({"csrf": "x", "expires": int(time.time()) - 5, "claims": claims})
    _set_cookie(browser, over)
    response = page_of(browser, f"/hitl/approvals/{world['mine']}")
    assert (
        response.status_code == 303
        and response.headers["location"] == f"/hitl/login?next=/hitl/approvals/{world['mine']}"
    )
    # Signed with another key.
    other = settings.model_copy(update={"hitl_link_secret": type(settings.hitl_link_secret)("y" * 40)})
    claims["exp"] = int(time.time()) + 300
    foreign = hitl_session._serializer(other).dumps({"csrf": "x", "expires": claims["exp"], "claims": claims})
    _set_cookie(browser, foreign)
    assert page_of(browser, "/hitl").headers["location"] == "/hitl/login"


def test_the_list_shows_only_pending_approvals_this_person_may_decide_newest_first(browser, engine, settings, world):
    sign_in(browser, settings, world["bob"], [world["tenant"]], ["approver", "finance"])
    page = page_of(browser, "/hitl").text
    shown = re.findall(r'id="approval-([^"]+)"', page)
    assert shown == [world["bobs"], world["finance"]]  # by id and by role, newest first; not Alice's, not foreign
    assert re.search(r"expires in (1 h \d+ min|2 h)<", page)
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">', page
    )
    with transaction(engine) as session:
        approvals.decide(
            session, tenant_id=world["tenant"], approval_id=world["bobs"], decision="approve", user_id=world["bob"]
        )
    assert re.findall(r'id="approval-([^"]+)"', page_of(browser, "/hitl").text) == [world["finance"]]


def test_an_ops_admin_sees_every_pending_approval_of_the_tenant_a_page_at_a_time(browser, settings, world):
    sign_in(browser, settings, "ops-1", [world["tenant"]], ["ops_admin"])
    first = page_of(browser, "/hitl?limit=2").text
    assert re.findall(r'id="approval-([^"]+)"', first) == [world["bobs"], world["finance"]]
    assert 'rel="next" href="/hitl?offset=2&amp;limit=2"' in first
    second = page_of(browser, "/hitl?offset=2&limit=2").text
    assert re.findall(r'id="approval-([^"]+)"', second) == [world["mine"]]
    assert page_of(browser, "/hitl?limit=100000").status_code == 422


def test_a_person_of_several_tenants_picks_one(browser, settings, world):
    sign_in(
        browser,
        settings,
        "both",
        [world["tenant"], world["other"]],
        [],
        tenant_roles={world["tenant"]: ["approver"], world["other"]: ["ops_admin"]},
    )
    page = page_of(browser, "/hitl").text
    assert '<select id="tenant" name="tenant">' in page
    chosen = browser.post(
        "/hitl/tenant", data={"csrf_token": csrf_of(page), "tenant": world["other"]}, follow_redirects=False
    )
    assert chosen.status_code == 303
    assert re.findall(r'id="approval-([^"]+)"', page_of(browser, "/hitl").text) == [world["foreign"]]
    assert page_of(browser, f"/hitl/approvals/{world['foreign']}").status_code == 200
    assert page_of(browser, f"/hitl/approvals/{world['mine']}").status_code == 404  # not the chosen tenant


def test_another_tenants_approval_is_a_404_page_and_cannot_be_decided(browser, engine, settings, world):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    unknown = page_of(browser, "/hitl/approvals/no-such-approval")
    foreign = page_of(browser, f"/hitl/approvals/{world['foreign']}")
    assert foreign.status_code == unknown.status_code == 404
    assert "text/html" in foreign.headers["content-type"] and "Another tenant" not in foreign.text
    csrf = csrf_of(page_of(browser, "/hitl").text)
    posted = browser.post(
        f"/hitl/approvals/{world['foreign']}/decide",
        data={"csrf_token": csrf, "decision": "approve"},
        follow_redirects=False,
    )
    assert posted.status_code == 404
    assert status_of(engine, world["foreign"]) == "pending"


def test_deciding_in_the_inbox_writes_the_audit_row_and_shows_the_outcome(browser, engine, settings, world):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    page = page_of(browser, f"/hitl/approvals/{world['mine']}")
    assert page.status_code == 200
    assert 'id="decision-form"' in page.text and 'id="progress"' in page.text
    decided = browser.post(
        f"/hitl/approvals/{world['mine']}/decide",
        data={"csrf_token": csrf_of(page.text), "decision": "approve", "comment": "paid ✓"},
        follow_redirects=False,
    )
    assert decided.status_code == 303 and decided.headers["location"] == f"/hitl/approvals/{world['mine']}"
    with transaction(engine) as session:
        row = session.get(HitlApproval, world["mine"])
        assert (row.status, row.decided_by, row.decision_comment) == ("approved", world["alice"], "paid ✓")
        audit = session.scalars(
            select(AuditLog).where(AuditLog.entity_id == world["mine"], AuditLog.action == "approval_decided")
        ).one()
        assert (audit.actor_id, audit.details["via"]) == (world["alice"], "inbox")
    after = page_of(browser, decided.headers["location"]).text
    assert 'id="outcome"' in after and f"by {world['alice']}" in after and 'id="decision-form"' not in after
    assert 'id="audit"' in after and "approval decided" in after and "paid ✓" in after


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"decision": "approve"}, id="missing"),
        pytest.param({"decision": "approve", "csrf_token": "wrong"}, id="wrong"),
    ],
)
def test_a_form_without_this_sessions_csrf_token_is_403_and_decides_nothing(browser, engine, settings, world, form):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    response = browser.post(f"/hitl/approvals/{world['mine']}/decide", data=form, follow_redirects=False)
    assert response.status_code == 403 and "text/html" in response.headers["content-type"]
    assert "Nothing was done" in response.text
    assert status_of(engine, world["mine"]) == "pending"
    assert browser.post("/hitl/logout", data=form, follow_redirects=False).status_code == 403
    assert page_of(browser, "/hitl").status_code == 200  # still signed in


def test_a_form_from_another_origin_is_403_even_with_the_token(browser, engine, settings, world):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    csrf = csrf_of(page_of(browser, "/hitl").text)
    for header in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Referer": "https://evil.example/x"}):
        response = browser.post(
            f"/hitl/approvals/{world['mine']}/decide",
            data={"csrf_token": csrf, "decision": "approve"},
            headers=header,
            follow_redirects=False,
        )
        assert response.status_code == 403, header
    assert status_of(engine, world["mine"]) == "pending"
    same = browser.post(
        f"/hitl/approvals/{world['mine']}/decide",
        data={"csrf_token": csrf, "decision": "reject"},
        headers={"Origin": "https://testserver"},
        follow_redirects=False,
    )
    assert same.status_code == 303 and status_of(engine, world["mine"]) == "rejected"


def test_the_sign_in_form_needs_its_csrf_token_too(browser, settings, world):
    token = make_token(settings, tenants=[world["tenant"]], roles=["approver"], sub=world["alice"])
    browser.get("/hitl/login", headers=HTML)
    response = browser.post("/hitl/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 403
    assert page_of(browser, "/hitl").headers["location"] == "/hitl/login"


def test_signing_out_ends_the_session(browser, settings, world):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    csrf = csrf_of(page_of(browser, "/hitl").text)
    out = browser.post("/hitl/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/hitl/login"
    assert page_of(browser, "/hitl").headers["location"] == "/hitl/login"


def test_a_decision_someone_made_first_is_a_message_on_the_page(browser, engine, settings, world):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    page = page_of(browser, f"/hitl/approvals/{world['mine']}").text
    with transaction(engine) as session:
        approvals.decide(
            session,
            tenant_id=world["tenant"],
            approval_id=world["mine"],
            decision="reject",
            user_id="ops-2",
            roles=["ops_admin"],
        )
    late = browser.post(
        f"/hitl/approvals/{world['mine']}/decide",
        data={"csrf_token": csrf_of(page), "decision": "approve"},
        follow_redirects=False,
    )
    assert late.status_code == 409 and "text/html" in late.headers["content-type"]
    assert re.search(
        r'id="conflict" role="alert">Already rejected by ops-2 at \d{4}-\d\d-\d\d \d\d:\d\d UTC\.', late.text
    )
    assert 'id="decision-form"' not in late.text and 'id="audit"' in late.text
    assert status_of(engine, world["mine"]) == "rejected"


def test_a_hostile_message_and_context_are_escaped_and_unicode_is_shown_intact(browser, engine, settings, world):
    hostile = '<script>alert("x")</script> مرحبا 🚀 שלום'
    context = {"<b>key</b>": {"nested": ["<img src=x onerror=alert(1)>", 42, True, None]}, "emoji": "💸 1 000 €"}
    with transaction(engine) as session:
        approval_id = _open(session, settings, world["tenant"], [world["alice"]], hostile, context=context)
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    for page in (page_of(browser, f"/hitl/approvals/{approval_id}").text, page_of(browser, "/hitl").text):
        assert "<script>" not in page and "<img" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; مرحبا 🚀 שלום" in page
    detail = page_of(browser, f"/hitl/approvals/{approval_id}").text
    assert "<dt>&lt;b&gt;key&lt;/b&gt;</dt>" in detail and "&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "💸 1 000 €" in detail


def test_the_pages_are_accessible_at_phone_width(browser, settings, world):
    login = browser.get("/hitl/login", headers=HTML).text
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    detail = page_of(browser, f"/hitl/approvals/{world['mine']}")
    for page in (login, detail.text):
        assert '<html lang="en">' in page and 'name="viewport" content="width=device-width' in page
        assert ":focus-visible" in page
        for input_id in re.findall(r'<(?:input|textarea|select)[^>]*\bid="([^"]+)"', page):
            assert f'<label for="{input_id}"' in page or f'<label class="inline" for="{input_id}"' in page, input_id
        levels = [int(level) for level in re.findall(r"<h([1-6])", page)]
        assert levels[0] == 1 and all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels
    assert "script-src" not in detail.headers["content-security-policy"]  # no script allowed or needed
    assert "<script" not in detail.text


def test_an_api_client_still_gets_json_at_the_same_path(browser, settings, world):
    headers = bearer(make_token(settings, tenants=[world["tenant"]], roles=["approver"], sub=world["alice"]))
    response = browser.get(
        f"/hitl/approvals/{world['mine']}", headers={**headers, **HTML, "X-Tenant-ID": world["tenant"]}
    )
    assert response.status_code == 200 and response.json()["id"] == world["mine"]


def test_the_signed_link_shows_the_same_page_without_a_session(browser, engine, settings, world):
    with transaction(engine) as session:
        token = sign(settings, session.get(HitlApproval, world["mine"]), world["alice"], "reject")
    shown = browser.get(f"/hitl/approval-links?token={token}", headers=HTML)
    assert shown.status_code == 200
    assert 'id="message"' in shown.text and 'id="progress"' in shown.text and 'id="reject-button"' in shown.text
    assert 'id="approve-button"' not in shown.text and "Sign out" not in shown.text
    used = browser.post(f"/hitl/approval-links?token={token}", data={"comment": "no"}, headers=HTML)
    assert used.status_code == 200 and "the request is rejected" in used.text
    again = browser.get(f"/hitl/approval-links?token={token}", headers=HTML)
    assert again.status_code == 410 and f"Already rejected by {world['alice']}" in again.text


FIELDS = [
    {"name": "amount", "type": "number", "label": "Amount paid", "required": True, "help": "In euros"},
    {"name": "reference", "type": "string", "default": "INV-1"},
    {"name": "urgent", "type": "boolean", "label": "Urgent", "default": True},
    {"name": "method", "type": "choice", "label": "Method", "options": ["wire", "card"], "required": True},
]


@pytest.fixture
def with_fields(engine, settings, world):
    with transaction(engine) as session:
        return approvals.open_approval(
            session,
            tenant_id=world["tenant"],
            requested_by="billing",
            assignees=[world["alice"]],
            message="Record the payment",
            timeout=dt.timedelta(hours=1),
            on_timeout="reject",
            fields=decision_fields.parse_fields(FIELDS, settings=settings),
            settings=settings,
        ).id


def test_the_decision_fields_are_rendered_by_type_with_label_help_required_and_default(
    browser, settings, world, with_fields
):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    page = page_of(browser, f"/hitl/approvals/{with_fields}").text
    assert '<label for="field-amount">Amount paid (required)</label>' in page
    assert re.search(r'<input type="number"[^>]*id="field-amount" name="fields.amount" value=""', page)
    assert 'aria-describedby="field-amount-help"' in page and 'id="field-amount-help">In euros<' in page
    assert re.search(r'<input type="text" id="field-reference" name="fields.reference" value="INV-1"', page)
    assert re.search(r'<input type="checkbox" id="field-urgent" name="fields.urgent" value="true" checked', page)
    assert '<select id="field-method" name="fields.method" required' in page
    assert '<option value="wire">wire</option>' in page and '<option value="card">card</option>' in page


def test_refused_field_values_show_the_form_again_with_each_error_beside_its_input(
    browser, engine, settings, world, with_fields
):
    sign_in(browser, settings, world["alice"], [world["tenant"]], ["approver"])
    page = page_of(browser, f"/hitl/approvals/{with_fields}").text
    response = browser.post(
        f"/hitl/approvals/{with_fields}/decide",
        data={"csrf_token": csrf_of(page), "decision": "approve", "fields.amount": "twelve", "comment": "see ✓"},
        follow_redirects=False,
    )
    assert response.status_code == 422
    text = response.text
    assert 'aria-describedby="field-amount-help field-amount-error" aria-invalid="true"' in text
    assert 'id="field-amount-error">a number<' in text and 'id="field-method-error">required to approve<' in text
    assert 'name="fields.amount" value="twelve"' in text and ">see ✓</textarea>" in text
    assert '<a href="#field-amount">Amount paid: a number</a>' in text  # the summary links to each input
    assert not re.search(r'id="field-urgent"[^>]*checked', text)  # unchecked as sent
    assert status_of(engine, with_fields) == "pending"
    decided = browser.post(
        f"/hitl/approvals/{with_fields}/decide",
        data={
            "csrf_token": csrf_of(text),
            "decision": "approve",
            "fields.amount": "12.5",
            "fields.method": "wire",
            "fields.urgent": "true",
        },
        follow_redirects=False,
    )
    assert decided.status_code == 303, decided.text
    with transaction(engine) as session:
        row = session.get(HitlApproval, with_fields)
        assert row.field_values == {"amount": 12.5, "reference": "INV-1", "urgent": True, "method": "wire"}
    after = page_of(browser, f"/hitl/approvals/{with_fields}").text
    assert "<dt>Amount paid</dt><dd>12.5</dd>" in after and "<dt>Method</dt><dd>wire</dd>" in after


def test_the_signed_link_page_takes_the_decision_fields_too(browser, engine, settings, world, with_fields):
    with transaction(engine) as session:
        token = sign(settings, session.get(HitlApproval, with_fields), world["alice"], "approve")
    shown = browser.get(f"/hitl/approval-links?token={token}", headers=HTML).text
    assert 'id="field-amount"' in shown and 'name="token"' in shown
    refused = browser.post(f"/hitl/approval-links?token={token}", data={"fields.method": "cash"}, headers=HTML)
    assert refused.status_code == 422 and 'id="field-method-error">one of' in refused.text
    as_json = browser.post(f"/hitl/approval-links?token={token}", data={"fields.method": "cash"})
    assert as_json.status_code == 422 and {e["field"] for e in as_json.json()["errors"]} == {
        "fields.amount",
        "fields.method",
    }
    used = browser.post(
        f"/hitl/approval-links?token={token}", data={"fields.amount": "3", "fields.method": "card"}, headers=HTML
    )
    assert used.status_code == 200 and "the request is approved" in used.text
    assert status_of(engine, with_fields) == "approved"


def test_ages_and_expiries_read_as_a_person_says_them():
    now = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    assert pages.ago(now - dt.timedelta(minutes=3, seconds=20), now) == "3 min ago"
    assert pages.expiry(now + dt.timedelta(hours=2), now) == "expires in 2 h"
    assert pages.expiry(now + dt.timedelta(hours=1, minutes=59, seconds=30), now) == "expires in 1 h 59 min"
    assert pages.expiry(now + dt.timedelta(days=1, hours=3), now) == "expires in 1 day 3 h"
    assert pages.expiry(now - dt.timedelta(minutes=5), now) == "expired 5 min ago"
    assert pages.utc(now.replace(tzinfo=None)) == "2026-12-07 09:00:00 UTC"
    assert pages.iso(now) == "2026-12-07T09:00:00Z"


def test_the_emailed_details_link_signs_in_then_opens_the_approval_in_its_tenant(browser, engine, settings, world):
    with transaction(engine) as session:
        email = session.scalars(
            select(Notification).where(
                Notification.channel == "email", Notification.recipient == f"stranger-{world['other'][:8]}@wrk.test"
            )
        ).one()
        url = email.payload["approval_url"]
    path = url[len(settings.hitl_link_base_url) :]
    assert path == f"/hitl/approvals/{world['foreign']}?tenant={world['other']}"
    to_login = page_of(browser, path)
    assert to_login.status_code == 303 and to_login.headers["location"].startswith("/hitl/login?next=")
    form = browser.get(to_login.headers["location"], headers=HTML).text
    assert f'name="next" value="{path}"' in form.replace("&amp;", "&")
    token = make_token(
        settings,
        tenants=[world["tenant"], world["other"]],
        roles=[],
        sub=world["stranger"],
        tenant_roles={world["tenant"]: ["approver"], world["other"]: ["approver"]},
    )
    signed_in = browser.post(
        "/hitl/login", data={"csrf_token": csrf_of(form), "token": token, "next": path}, follow_redirects=False
    )
    assert signed_in.headers["location"] == path
    page = page_of(browser, path)
    assert page.status_code == 200 and "Another tenant&#39;s request" in page.text
    assert 'id="decision-form"' in page.text


@pytest.mark.parametrize("elsewhere", ["https://evil.example/", "//evil.example/hitl", "/hitl//evil", "/v1/users"])
def test_signing_in_never_sends_the_person_outside_the_inbox(browser, settings, world, elsewhere):
    form = browser.get("/hitl/login", headers=HTML).text
    token = make_token(settings, tenants=[world["tenant"]], roles=["approver"], sub=world["alice"])
    response = browser.post(
        "/hitl/login", data={"csrf_token": csrf_of(form), "token": token, "next": elsewhere}, follow_redirects=False
    )
    assert response.headers["location"] == "/hitl"

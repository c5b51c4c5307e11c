"""Approvals decided in a real browser (Debian's Chromium through Playwright) against the API under
uvicorn, with a Dagster daemon running the workflows on: a decision made in the inbox reaches the next
step. The people: alice and bob, approvers of one tenant; mallory, of another."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from domain.core.models import HitlApproval
from domain.core.store import transaction
from domain.workflows.approval_links import LINK_PATH, sign as sign_link
from tests.browser.conftest import PHONE, Person, Stack
from tests.orchestration_defs.workflow_helpers import approval, call, new_workflow, start
from tests.servers import until

pytestmark = pytest.mark.xdist_group("browser")  # one stack per module: its tests run on one worker

# The decision fields the approvals here ask for: one of each type.
FIELDS: list[dict[str, Any]] = [
    {"name": "amount", "type": "number", "label": "Refund amount (EUR)", "required": True},
    {"name": "reason", "type": "string", "label": "Reason"},
    {"name": "notify_customer", "type": "boolean", "label": "Notify the customer"},
    {"name": "channel", "type": "choice", "label": "Channel", "options": ["email", "sms", "post"], "required": True},
]


def refund_message() -> str:
    """A message no other test's approval has, to find this one in a shared inbox."""
    return f"Refund 120 EUR on INV-{uuid.uuid4().hex[:6]}?"


def execution_view(stack: Stack, tenant_id: str, execution_id: str) -> dict[str, Any]:
    """A workflow execution as the API shows it to an operator of its tenant."""
    with stack.service(tenant_id, ["workflow_operator"]) as api:
        answer = api.get(f"/v1/workflow-executions/{execution_id}")
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found


def steps_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def waiting_execution(
    stack: Stack, approver: Person, message: str, fields: list[dict[str, Any]], body: Any
) -> tuple[str, str]:
    """A workflow execution of the approver's tenant, run by the daemon up to its approval step `review`
    (asking for `fields`); the step after it, `apply`, sends `body` (with its `$ref`s) to a service.
    Returns (execution id, approval id)."""
    _, workflow = new_workflow(
        stack.engine,
        [
            approval("review", [], ["role:approver"], message=message, fields=fields),
            call("apply", "forecasting", ["review"], body=body),
        ],
        tenant_id=approver.tenant_id,
    )
    execution = start(stack.engine, approver.tenant_id, workflow, {"account_id": "acc-browser"})
    until(lambda: execution_view(stack, approver.tenant_id, execution)["status"] == "waiting_approval", stack.tail)
    with stack.api(approver) as api:
        [waiting] = api.get("/hitl/approvals", params={"execution_id": execution}).json()["items"]
    return execution, waiting["id"]


def standalone(stack: Stack, tenant_id: str, message: str, fields: list[dict[str, Any]] = FIELDS) -> str:
    """A standalone request from another service to the tenant's approvers, asking for `fields`."""
    with stack.service(tenant_id, ["service"]) as api:
        answer = api.post(
            "/hitl/approvals",
            json={"message": message, "assignees": ["role:approver"], "timeout": "PT1H", "fields": fields},
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def approval_json(stack: Stack, person: Person, approval_id: str) -> dict[str, Any]:
    with stack.api(person) as api:
        answer = api.get(f"/hitl/approvals/{approval_id}")
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found


def sign_in(page: Page, stack: Stack, person: Person) -> None:
    page.goto(f"{stack.api_url}/hitl")  # not signed in: sent to the sign-in page
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(person.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Waiting for your decision")).to_be_visible()
    expect(page.locator("#signed-in-as")).to_have_text(person.id)


def fill_fields(page: Page, *, amount: str | None = "120.5", channel: str = "sms") -> None:
    if amount is not None:
        page.get_by_label("Refund amount (EUR)").fill(amount)
    page.get_by_label("Reason").fill("parcel lost in transit")
    page.get_by_label("Notify the customer").check()
    page.get_by_label("Channel").select_option(channel)
    page.get_by_label("Comment (optional)").fill("checked the carrier's report")


def test_an_approver_signs_in_decides_with_fields_and_the_next_step_uses_them(
    stack: Stack, page: Page, screenshot
) -> None:
    alice = stack.people["alice"]
    message = refund_message()
    review = "/steps/review/output/fields/"
    execution, approval_id = waiting_execution(
        stack,
        alice,
        message,
        FIELDS,
        {name: {"$ref": review + name} for name in ("amount", "reason", "notify_customer", "channel")},
    )

    page.goto(f"{stack.api_url}/hitl/login")
    screenshot(page, "1-sign-in")
    sign_in(page, stack, alice)
    listed = page.locator(f"#approval-{approval_id}")
    expect(listed).to_be_visible()
    expect(page.locator("#approvals li").first).to_have_id(f"approval-{approval_id}")  # newest first
    screenshot(page, "2-inbox")

    listed.get_by_role("link", name=message).click()
    expect(page.get_by_role("heading", name="Decide this request")).to_be_visible()
    expect(page.locator("#message")).to_have_text(message)
    expect(page.locator("#execution-status")).to_have_text("waiting_approval")
    fill_fields(page)
    screenshot(page, "3-approval-form")
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("heading", name="Request approved")).to_be_visible()
    expect(page.locator("#outcome")).to_contain_text(f"Approved by {alice.id}")
    expect(page.locator("#decision-comment")).to_have_text("checked the carrier's report")
    values = page.locator("#decision-values")
    for shown in ("Refund amount (EUR)", "120.5", "parcel lost in transit", "sms"):
        expect(values).to_contain_text(shown)
    expect(page.locator("#audit")).to_contain_text(alice.id)
    expect(page.locator("#audit")).to_contain_text("approved")
    screenshot(page, "4-decided")

    until(lambda: execution_view(stack, alice.tenant_id, execution)["status"] == "succeeded", stack.tail)
    applied = steps_of(execution_view(stack, alice.tenant_id, execution))["apply"]
    assert applied["output"]["received"] == {
        "amount": 120.5,
        "reason": "parcel lost in transit",
        "notify_customer": True,
        "channel": "sms",
    }
    page.reload()
    expect(page.locator("#execution-status")).to_have_text("succeeded")
    expect(page.locator("#progress")).to_contain_text("apply")
    screenshot(page, "5-next-step-ran")


def test_the_second_person_deciding_sees_who_decided_first(stack: Stack, new_context, screenshot) -> None:
    alice, bob = stack.people["alice"], stack.people["bob"]
    approval_id = standalone(stack, alice.tenant_id, refund_message())
    alice_page, bob_page = new_context().new_page(), new_context().new_page()
    for page, person in ((alice_page, alice), (bob_page, bob)):
        sign_in(page, stack, person)
        page.goto(f"{stack.api_url}/hitl/approvals/{approval_id}")
        expect(page.get_by_role("heading", name="Decide this request")).to_be_visible()
        fill_fields(page)

    alice_page.get_by_role("button", name="Approve").click()
    expect(alice_page.get_by_role("heading", name="Request approved")).to_be_visible()
    with bob_page.expect_response(lambda r: r.request.method == "POST") as answered:
        bob_page.get_by_role("button", name="Reject").click()
    assert answered.value.status == 409
    conflict = bob_page.locator("#conflict")
    expect(conflict).to_contain_text(f"Already approved by {alice.id}")
    expect(bob_page.locator("#outcome")).to_contain_text(f"Approved by {alice.id}")
    expect(bob_page.locator("#decision-form")).to_have_count(0)
    screenshot(bob_page, "second-decider")
    decided = approval_json(stack, alice, approval_id)
    assert (decided["status"], decided["decided_by"]) == ("approved", alice.id)


def test_a_form_post_without_this_session_s_csrf_token_decides_nothing(stack: Stack, page: Page, screenshot) -> None:
    alice = stack.people["alice"]
    approval_id = standalone(stack, alice.tenant_id, refund_message())
    sign_in(page, stack, alice)
    url = f"{stack.api_url}/hitl/approvals/{approval_id}"

    # The page's own form with its hidden token altered.
    page.goto(url)
    form = page.locator("#decision-form")
    action = stack.api_url + str(form.get_attribute("action"))  # where the page's form posts
    fill_fields(page)
    form.locator("input[name=csrf_token]").evaluate("input => input.value = 'forged'")
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        page.get_by_role("button", name="Approve").click()
    assert answered.value.status == 403
    expect(page.get_by_role("heading", name="This form cannot be accepted")).to_be_visible()
    screenshot(page, "wrong-token")

    # Another site's form (the sandbox's origin, which shares the cookie's site 127.0.0.1), no token.
    page.goto(f"{stack.sandbox_url}/_sandbox/calls")
    page.set_content(
        f'<form method="post" action="{action}"><input name="decision" value="approve">'
        '<input name="fields.amount" value="1"><input name="fields.channel" value="sms"><button>Go</button></form>'
    )
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        page.get_by_role("button", name="Go").click()
    assert answered.value.status == 403
    expect(page.get_by_role("heading", name="This form cannot be accepted")).to_be_visible()
    screenshot(page, "no-token")

    assert approval_json(stack, alice, approval_id)["status"] == "pending"
    page.goto(url)
    expect(page.get_by_role("heading", name="Decide this request")).to_be_visible()


def test_another_tenant_s_approval_is_not_found_and_shown_nowhere(stack: Stack, page: Page, screenshot) -> None:
    alice, mallory = stack.people["alice"], stack.people["mallory"]
    secret = f"Foreign secret {uuid.uuid4().hex}"
    foreign = standalone(stack, mallory.tenant_id, secret)
    own = standalone(stack, alice.tenant_id, refund_message())
    sign_in(page, stack, alice)
    expect(page.locator(f"#approval-{own}")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(secret)

    with page.expect_response(lambda r: r.url.endswith(foreign)) as answered:
        page.goto(f"{stack.api_url}/hitl/approvals/{foreign}")
    assert answered.value.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(secret)
    screenshot(page, "foreign-approval")

    # Her own approval's form (her session's valid token) pointed at the foreign one: 404, nothing decided.
    page.goto(f"{stack.api_url}/hitl/approvals/{own}")
    fill_fields(page)
    page.locator("#decision-form").evaluate(
        "(form, ids) => form.action = form.getAttribute('action').replace(ids[0], ids[1])", [own, foreign]
    )
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        page.get_by_role("button", name="Approve").click()
    assert answered.value.status == 404
    expect(page.locator("body")).not_to_contain_text(secret)
    assert approval_json(stack, mallory, foreign)["status"] == "pending"
    assert approval_json(stack, alice, own)["status"] == "pending"


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def tab_to(page: Page, selector: str) -> None:
    """Press Tab until the element `selector` names has the focus (as a keyboard user moves)."""
    for _ in range(60):
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_on_a_phone_the_list_and_the_form_fit_and_the_keyboard_decides(stack: Stack, new_context, screenshot) -> None:
    alice = stack.people["alice"]
    approval_id = standalone(stack, alice.tenant_id, refund_message() + " " + "long-context-" * 20)
    page = new_context(viewport=PHONE).new_page()
    sign_in(page, stack, alice)
    expect(page.locator(f"#approval-{approval_id}")).to_be_visible()
    assert no_horizontal_scroll(page)
    screenshot(page, "phone-inbox")

    page.goto(f"{stack.api_url}/hitl/approvals/{approval_id}")
    expect(page.get_by_role("heading", name="Decide this request")).to_be_visible()
    assert no_horizontal_scroll(page)
    screenshot(page, "phone-approval")

    # Keyboard only, from the top of the page.
    page.locator("body").focus()
    tab_to(page, "#field-amount")
    page.keyboard.type("75")
    tab_to(page, "#field-notify_customer")
    page.keyboard.press("Space")
    tab_to(page, "#field-channel")
    page.keyboard.press("ArrowDown")  # a focused select steps through its options
    page.keyboard.press("ArrowDown")
    tab_to(page, "#approve-button")
    screenshot(page, "phone-keyboard-filled")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Request approved")).to_be_visible()
    assert no_horizontal_scroll(page)
    screenshot(page, "phone-decided")
    decided = approval_json(stack, alice, approval_id)
    assert decided["status"] == "approved"
    assert decided["field_values"]["amount"] == 75
    assert decided["field_values"]["notify_customer"] is True
    assert decided["field_values"]["channel"] == "sms"  # (choose), then two steps down


def test_a_required_field_left_empty_is_marked_beside_its_input_with_the_values_kept(
    stack: Stack, page: Page, screenshot
) -> None:
    alice = stack.people["alice"]
    approval_id = standalone(stack, alice.tenant_id, refund_message())
    sign_in(page, stack, alice)
    page.goto(f"{stack.api_url}/hitl/approvals/{approval_id}")
    fill_fields(page, amount=None, channel="post")
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        page.get_by_role("button", name="Approve").click()
    assert answered.value.status == 422

    amount = page.get_by_label("Refund amount (EUR)")
    error = page.locator("#field-amount-error")
    expect(error).to_be_visible()
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_have_attribute("aria-describedby", "field-amount-error")
    # Beside its input: the next thing after it, in the same part of the form.
    assert amount.evaluate("input => input.nextElementSibling.id") == "field-amount-error"
    expect(page.get_by_label("Reason")).to_have_value("parcel lost in transit")
    expect(page.get_by_label("Notify the customer")).to_be_checked()
    expect(page.get_by_label("Channel")).to_have_value("post")
    expect(page.get_by_label("Comment (optional)")).to_have_value("checked the carrier's report")
    screenshot(page, "field-error")
    assert approval_json(stack, alice, approval_id)["status"] == "pending"


def test_a_signed_link_decides_with_fields_and_the_next_step_runs(stack: Stack, page: Page, screenshot) -> None:
    alice = stack.people["alice"]
    execution, approval_id = waiting_execution(
        stack,
        alice,
        refund_message(),
        FIELDS,
        {
            "channel": {"$ref": "/steps/review/output/fields/channel"},
            "comment": {"$ref": "/steps/review/output/comment"},
        },
    )
    with transaction(stack.engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert row is not None
        token = sign_link(stack.settings, row, alice.id, "approve")

    page.goto(f"{stack.api_url}{LINK_PATH}?token={token}")  # from the e-mail: no session, no sign-in
    expect(page.get_by_role("button", name="Reject")).to_have_count(0)  # this link approves only
    fill_fields(page, channel="email")
    screenshot(page, "1-link-form")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name="Request approved")).to_be_visible()
    screenshot(page, "2-link-decided")

    until(lambda: execution_view(stack, alice.tenant_id, execution)["status"] == "succeeded", stack.tail)
    applied = steps_of(execution_view(stack, alice.tenant_id, execution))["apply"]
    assert applied["output"]["received"] == {"channel": "email", "comment": "checked the carrier's report"}

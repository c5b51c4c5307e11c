"""Approvals decided in a real browser (Debian's Chromium through Playwright) against the API under
uvicorn; a Dagster daemon runs the workflow on, so each decision is seen to reach the next step."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from domain.core.models import HitlApproval
from domain.core.store import transaction
from domain.workflows.approval_links import LINK_PATH, sign
from tests.browser.conftest import Person, Stack
from tests.orchestration_defs.workflow_helpers import approval, call, new_workflow, start, state, steps
from tests.servers import until

pytestmark = pytest.mark.xdist_group("browser")  # one stack per module: its tests run on one worker


def waiting_approval(stack: Stack, approver: Person, input: dict[str, Any]) -> tuple[str, HitlApproval]:
    """A workflow execution of the approver's tenant, started and run by the daemon up to its approval
    step `review`; the step after it, `apply`, sends the decision's comment to a service."""
    _, workflow = new_workflow(
        stack.engine,
        [
            approval("review", [], ["role:approver"], message="Refund 120 EUR on INV-7?"),
            call("apply", "forecasting", ["review"], body={"comment": {"$ref": "/steps/review/output/comment"}}),
        ],
        tenant_id=approver.tenant_id,
    )
    execution = start(stack.engine, approver.tenant_id, workflow, input)
    until(lambda: state(stack.engine, execution)["status"] == "waiting_approval", stack.tail)
    with transaction(stack.engine) as session:
        row = session.scalars(select(HitlApproval).where(HitlApproval.workflow_execution_id == execution)).one()
        session.expunge(row)
    return execution, row


def test_a_signed_link_decides_and_the_next_step_runs(stack: Stack, page: Page, screenshot) -> None:
    alice = stack.people["alice"]
    execution, row = waiting_approval(stack, alice, {"account_id": "acc-link"})
    token = sign(stack.settings, row, alice.id, "approve")

    page.goto(f"{stack.api_url}{LINK_PATH}?token={token}")
    expect(page.get_by_role("heading", name="Approve this request?")).to_be_visible()
    expect(page.get_by_text("Refund 120 EUR on INV-7?")).to_be_visible()
    screenshot(page, "1-link-confirmation")
    page.get_by_label("Comment (optional)").fill("fine by me")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name="Request approved")).to_be_visible()
    screenshot(page, "2-link-decided")

    until(lambda: state(stack.engine, execution)["status"] == "succeeded", stack.tail)
    applied = steps(state(stack.engine, execution))["apply"]
    assert applied["output"]["received"] == {"comment": "fine by me"}

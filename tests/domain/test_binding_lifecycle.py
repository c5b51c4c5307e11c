"""Workflow bindings' state machine: one table of moves in domain.lifecycle,
audited, refusing illegal moves; no status write outside it."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from domain import lifecycle, models
from domain.lifecycle import WORKFLOW_BINDING_TRANSITIONS, BindingStatus, InvalidStatusTransition
from domain.store import transaction
from tests.domain import factories

PAIRS = list(itertools.product(list(BindingStatus), list(BindingStatus)))


def _binding(session, status: BindingStatus) -> models.WorkflowBinding:
    project = factories.project(session, factories.tenant(session).id)
    version = factories.version(session, project)
    binding = models.WorkflowBinding(tenant_id=version.tenant_id, automation_version_id=version.id, status=status)
    session.add(binding)
    session.flush()
    return binding


def _audit(session, binding_id: str) -> list[models.AuditLog]:
    return list(session.scalars(select(models.AuditLog).where(models.AuditLog.entity_id == binding_id)))


@pytest.mark.parametrize(("current", "requested"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_binding_transition_is_allowed_or_refused_by_the_table(shared_engine, current, requested):
    with transaction(shared_engine) as session:
        binding = _binding(session, current)
        binding_id = binding.id
        if current is requested:
            assert lifecycle.transition_binding(session, binding, requested, actor=factories.TEST_ACTOR) is None
        elif requested in WORKFLOW_BINDING_TRANSITIONS[current]:
            lifecycle.transition_binding(session, binding, requested, actor=factories.TEST_ACTOR, reason="test")
        else:
            with pytest.raises(InvalidStatusTransition) as refused:
                lifecycle.transition_binding(session, binding, requested, actor=factories.TEST_ACTOR)
            assert refused.value.entity_type == "workflow_bindings"
    with transaction(shared_engine) as session:
        stored = session.get(models.WorkflowBinding, binding_id)
        rows = _audit(session, binding_id)
        if requested in WORKFLOW_BINDING_TRANSITIONS[current]:
            assert stored.status == requested.value
            [row] = rows
            assert (row.entity_type, row.previous_status, row.new_status) == (
                "workflow_bindings",
                current.value,
                requested.value,
            )
            assert row.details["automation_version_id"] == stored.automation_version_id
        else:
            assert stored.status == current.value and rows == []


def test_a_built_binding_never_goes_back_to_error_or_pending():
    for built in (BindingStatus.ACTIVE, BindingStatus.INACTIVE):
        assert not WORKFLOW_BINDING_TRANSITIONS[built] & {BindingStatus.ERROR, BindingStatus.PENDING}


def test_binding_status_written_outside_the_lifecycle_is_refused(shared_engine):
    with pytest.raises(models.StatusWriteOutsideLifecycle), transaction(shared_engine) as session:
        binding = _binding(session, BindingStatus.ACTIVE)
        binding.status = BindingStatus.ERROR.value
        session.flush()

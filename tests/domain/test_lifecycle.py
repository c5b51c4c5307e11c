from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from domain.core import lifecycle, models
from domain.core.lifecycle import (
    AUTOMATION_VERSION_TRANSITIONS,
    PROJECT_TRANSITIONS,
    InvalidStatusTransition,
    Status,
)
from domain.core.store import transaction
from tests.domain import factories

PAIRS = list(itertools.product(list(Status), list(Status)))


def _audit_rows(session, entity_id: str) -> list[models.AuditLog]:
    return list(session.scalars(select(models.AuditLog).where(models.AuditLog.entity_id == entity_id)))


def _check_pair(engine: Engine, entity_type: str, current: Status, requested: Status) -> None:
    table = PROJECT_TRANSITIONS if entity_type == "projects" else AUTOMATION_VERSION_TRANSITIONS
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        project = factories.project(session, tenant.id)
        entity: models.Project | models.AutomationVersion
        entity = project if entity_type == "projects" else factories.version(session, project)
        factories.put_in_status(session, entity, current)
        entity_id = entity.id
        if requested in table[current]:
            entry = lifecycle.transition(
                session, entity, requested, actor=factories.TEST_ACTOR, reason="test", metadata={"k": 1}
            )
            assert entity.status == requested.value
        else:
            with pytest.raises(InvalidStatusTransition) as refused:
                lifecycle.transition(session, entity, requested, actor=factories.TEST_ACTOR)
            assert refused.value.current == current and refused.value.requested == requested
            assert entity.status == current.value
            entry = None
    with transaction(engine) as session:
        stored = session.get(models.Project if entity_type == "projects" else models.AutomationVersion, entity_id)
        rows = _audit_rows(session, entity_id)
        if entry is None:
            assert stored.status == current.value
            assert rows == []
        else:
            assert stored.status == requested.value
            [row] = rows
            assert (row.previous_status, row.new_status) == (current.value, requested.value)
            assert (row.actor_type, row.actor_id, row.reason) == ("system", "tests", "test")
            assert row.details == {"k": 1} and row.tenant_id == stored.tenant_id
            assert row.entity_type == entity_type and row.action == "status_change"


@pytest.mark.parametrize(("current", "requested"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_automation_version_transition_is_allowed_or_refused_by_the_table(shared_engine, current, requested):
    _check_pair(shared_engine, "automation_versions", current, requested)


@pytest.mark.parametrize(("current", "requested"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_project_transition_is_allowed_or_refused_by_the_table(shared_engine, current, requested):
    _check_pair(shared_engine, "projects", current, requested)


def test_every_status_is_reachable_from_draft_and_archived_is_terminal():
    for table in (AUTOMATION_VERSION_TRANSITIONS, PROJECT_TRANSITIONS):
        seen, frontier = {Status.DRAFT}, [Status.DRAFT]
        while frontier:
            for nxt in table[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen == set(Status)
        assert table[Status.ARCHIVED] == frozenset()


def test_status_written_outside_the_lifecycle_is_refused(shared_engine):
    with pytest.raises(models.StatusWriteOutsideLifecycle), transaction(shared_engine) as session:
        project = factories.project(session, factories.tenant(session).id)
        version = factories.version(session, project)
        version.status = Status.LIVE.value
        session.flush()


def test_new_row_must_start_in_draft(shared_engine):
    with pytest.raises(models.StatusWriteOutsideLifecycle), transaction(shared_engine) as session:
        project = factories.project(session, factories.tenant(session).id)
        session.add(
            models.AutomationVersion(
                tenant_id=project.tenant_id, project_id=project.id, version_number=1, status="Live"
            )
        )
        session.flush()


def test_database_refuses_a_second_live_version_of_a_project(engine):
    with transaction(engine) as session:
        project = factories.project(session, factories.tenant(session).id)
        factories.version(session, project, 1, Status.LIVE)
        second = factories.version(session, project, 2, Status.READY_TO_LAUNCH)
        project_id, second_id = project.id, second.id
    with pytest.raises(IntegrityError), transaction(engine) as session:
        second = session.get(models.AutomationVersion, second_id)
        lifecycle.transition(session, second, Status.LIVE, actor=factories.TEST_ACTOR)
        session.flush()
    with transaction(engine) as session:
        live = session.scalars(
            select(models.AutomationVersion.id).where(
                models.AutomationVersion.project_id == project_id, models.AutomationVersion.status == "Live"
            )
        ).all()
        assert len(live) == 1
        # the refused transaction left no audit row behind
        assert _audit_rows(session, second_id) == []


def test_live_versions_of_different_projects_coexist(engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        for _ in range(2):
            factories.version(session, factories.project(session, tenant.id), 1, Status.LIVE)


def test_a_version_cannot_point_at_another_tenants_project(engine):
    with pytest.raises(IntegrityError), transaction(engine) as session:
        project = factories.project(session, factories.tenant(session).id)
        other = factories.tenant(session)
        session.add(models.AutomationVersion(tenant_id=other.id, project_id=project.id, version_number=1))
        session.flush()


def test_check_constraint_refuses_an_unknown_status(engine):
    from sqlalchemy import text

    with transaction(engine) as session:
        project = factories.project(session, factories.tenant(session).id)
        project_id = project.id
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.execute(text("UPDATE projects SET status = 'Shipped' WHERE id = :id"), {"id": project_id})

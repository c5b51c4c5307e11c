"""`wrk-orch seed-demo`: two tenants with users, projects and versions in every lifecycle status.

Idempotent: ids are derived from names, and a tenant that already exists is left as it is. Every status
is reached by walking the lifecycle, so the demo data carries the audit trail real data would.

The recipes (README, docs/) use up demo versions (a build moves a Draft on, a deploy archives the previous Live
version), so they take a fresh one each time: `wrk-orch demo-version --status Draft` adds a new version
to a demo project, walked through the lifecycle to that status, with its binding. `seed-demo --reset`
puts the demo tenants back as they were first seeded.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from domain.core import lifecycle, models
from domain.core.lifecycle import Actor, Status
from domain.queue import queue
from domain.workflows import workflows
from domain.workflows.workflow_definitions import parse

S = Status
DEMO_NAMESPACE = uuid.UUID("6f0c3a52-3a1e-4c55-9d8b-0c8f8f1f5e01")
SEED_ACTOR = Actor.system("seed-demo")

# The path through the lifecycle that ends in each status.
PATH_TO: dict[Status, list[Status]] = {
    S.DRAFT: [],
    S.BUILD_IN_PROGRESS: [S.BUILD_IN_PROGRESS],
    S.QA_AND_TESTING: [S.BUILD_IN_PROGRESS, S.QA_AND_TESTING],
    S.READY_TO_LAUNCH: [S.BUILD_IN_PROGRESS, S.QA_AND_TESTING, S.READY_TO_LAUNCH],
    S.LIVE: [S.BUILD_IN_PROGRESS, S.QA_AND_TESTING, S.READY_TO_LAUNCH, S.LIVE],
    S.PAUSED: [S.BUILD_IN_PROGRESS, S.QA_AND_TESTING, S.READY_TO_LAUNCH, S.LIVE, S.PAUSED],
    S.ARCHIVED: [S.BUILD_IN_PROGRESS, S.QA_AND_TESTING, S.READY_TO_LAUNCH, S.ARCHIVED],
    S.ERROR: [S.BUILD_IN_PROGRESS, S.ERROR],
}

BINDING_FOR: dict[Status, models.BindingStatus | None] = {
    S.DRAFT: None,
    S.BUILD_IN_PROGRESS: models.BindingStatus.PENDING,
    S.QA_AND_TESTING: models.BindingStatus.ACTIVE,
    S.READY_TO_LAUNCH: models.BindingStatus.ACTIVE,
    S.LIVE: models.BindingStatus.ACTIVE,
    S.PAUSED: models.BindingStatus.ACTIVE,
    S.ARCHIVED: models.BindingStatus.INACTIVE,
    S.ERROR: models.BindingStatus.ERROR,
}

DEMO: list[dict[str, Any]] = [
    {
        "name": "Acme Logistics",
        "users": [
            ("olivia.ops@wrk.local", "Olivia Ops", ["ops_admin"]),
            ("bruno.build@wrk.local", "Bruno Build", ["ops_build"]),
            ("rita.release@wrk.local", "Rita Release", ["ops_release"]),
            ("carla.client@acme.example", "Carla Client", ["client"]),
            # The seven-phase pipeline's demo user (user_id "demo"): a seller reading their own sync.
            ("demo@acme.example", "Demo Seller", ["seller"]),
        ],
        "projects": [
            # One version in every lifecycle status; Paused before Live so the one Live version is last.
            (
                "Invoice Intake",
                S.LIVE,
                [
                    S.DRAFT,
                    S.BUILD_IN_PROGRESS,
                    S.QA_AND_TESTING,
                    S.READY_TO_LAUNCH,
                    S.ARCHIVED,
                    S.ERROR,
                    S.PAUSED,
                    S.LIVE,
                ],
            ),
            # Several deployable candidates, to try deploys and their races.
            ("Order Sync", S.READY_TO_LAUNCH, [S.READY_TO_LAUNCH, S.READY_TO_LAUNCH, S.READY_TO_LAUNCH]),
        ],
    },
    {
        "name": "Globex Retail",
        "users": [
            ("gary.ops@wrk.local", "Gary Ops", ["ops_admin"]),
            ("gina.client@globex.example", "Gina Client", ["client"]),
        ],
        "projects": [("Store Ops", S.LIVE, [S.LIVE, S.READY_TO_LAUNCH])],
    },
]


def demo_id(*parts: str) -> str:
    return str(uuid.uuid5(DEMO_NAMESPACE, "/".join(parts)))


def workflow_id_for(version_id: str, live: bool = False) -> str:
    """The demo's platform workflow id of a version. The sandbox knows every `wf_demo_` id from the start,
    inactive, except those of versions seeded Live (`wf_demo_live_`), which start active: a fresh sandbox
    and a fresh seed agree, so the first deploy reconciliation has nothing to do and alerts no one."""
    return ("wf_demo_live_" if live else "wf_demo_") + version_id.replace("-", "")[:16]


# Users whose id is fixed rather than derived from the e-mail (the README's phase recipe names "demo").
FIXED_USER_IDS = {"demo@acme.example": "demo"}


def demo_user_id(email: str) -> str:
    return FIXED_USER_IDS.get(email) or demo_id(email)


def demo_tenant_ids() -> list[str]:
    return [demo_id(spec["name"]) for spec in DEMO]


def seed_demo(session: Session) -> dict[str, Any]:
    for spec in DEMO:
        if session.get(models.Tenant, demo_id(spec["name"])) is None:
            _seed_tenant(session, spec)
    session.flush()
    return describe(session, demo_tenant_ids())


def _walk(session: Session, entity: models.AutomationVersion | models.Project, path: list[Status]) -> None:
    for step in path:
        lifecycle.transition(session, entity, step, actor=SEED_ACTOR, reason="demo data")


def _seed_tenant(session: Session, spec: dict[str, Any]) -> None:
    tenant_id = demo_id(spec["name"])
    if session.get(models.Tenant, tenant_id) is None:  # kept by a reset
        session.add(models.Tenant(id=tenant_id, name=spec["name"]))
    users: list[models.User] = []
    for email, name, _roles in spec["users"]:
        user_id = demo_user_id(email)
        user = session.get(models.User, user_id) or models.User(id=user_id, email=email, name=name)
        session.add(user)
        users.append(user)
    session.flush()  # the models declare no relationships, so parents are flushed before children
    for user, (_email, _name, roles) in zip(users, spec["users"], strict=True):
        session.add(models.TenantMembership(tenant_id=tenant_id, user_id=user.id, roles=roles))
    owner = next(u for u, (_, _, roles) in zip(users, spec["users"], strict=True) if "client" in roles)
    ops = users[0]
    for project_name, project_status, version_statuses in spec["projects"]:
        project = models.Project(
            id=demo_id(spec["name"], project_name),
            tenant_id=tenant_id,
            name=project_name,
            status=S.DRAFT.value,
            owner_user_id=owner.id,
            client_email=owner.email,
        )
        session.add(project)
        session.flush()
        _walk(session, project, PATH_TO[project_status])
        session.flush()
        for user in (owner, ops):
            session.add(models.ProjectCollaborator(tenant_id=tenant_id, project_id=project.id, user_id=user.id))
        for number, status in enumerate(version_statuses, start=1):
            _seed_version(session, project, number, status)
            session.flush()  # one version at a time, so the one-Live index sees each step
    if spec is DEMO[0]:
        seed_demo_workflow(session, tenant_id)


# A workflow with two service calls, an approval and a publish (docs/workflows-and-approvals.md).
DEMO_WORKFLOW = {
    "name": "account-review",
    "description": "Score an account, forecast it, ask ops to approve, publish the result",
    "trigger_on": ["shard.updated"],
    "steps": [
        {
            "name": "score",
            "kind": "service_call",
            "service": "ml_service",
            "method": "POST",
            "path": "/v1/score",
            "body": {"account_id": {"$ref": "/input/account_id"}},
        },
        {
            "name": "forecast",
            "kind": "service_call",
            "service": "forecasting",
            "method": "POST",
            "path": "/v1/forecast",
            "body": {"account_id": {"$ref": "/input/account_id"}, "score": {"$ref": "/steps/score/output/value"}},
            "depends_on": ["score"],
        },
        {
            "name": "review",
            "kind": "approval",
            "assignees": ["role:ops_admin"],
            "message": "Apply the forecast for this account?",
            "timeout": "PT1H",
            "on_timeout": "reject",
            "depends_on": ["forecast"],
            "fields": [
                {
                    "name": "priority",
                    "type": "choice",
                    "label": "Priority",
                    "options": ["normal", "urgent"],
                    "default": "normal",
                },
                {"name": "note", "type": "string", "label": "Note for the account team", "help": "Optional"},
            ],
        },
        {
            "name": "announce",
            "kind": "publish",
            "queue": "workflow_results",
            "body": {
                "job": "account-review",
                "account_id": {"$ref": "/input/account_id"},
                "forecast": {"$ref": "/steps/forecast/output/value"},
                "priority": {"$ref": "/steps/review/output/fields/priority"},
                "note": {"$ref": "/steps/review/output/fields/note"},
            },
            "depends_on": ["review"],
        },
    ],
}


def demo_workflow_id(tenant_id: str) -> str:
    return demo_id(tenant_id, "workflow", str(DEMO_WORKFLOW["name"]))


def seed_demo_workflow(session: Session, tenant_id: str) -> None:
    if session.get(models.Workflow, demo_workflow_id(tenant_id)) is None:
        spec = parse(DEMO_WORKFLOW)
        workflows.create_workflow(session, tenant_id, spec, SEED_ACTOR, workflow_id=demo_workflow_id(tenant_id))
        session.flush()


def _seed_version(session: Session, project: models.Project, number: int, status: Status) -> None:
    version = models.AutomationVersion(
        id=demo_id(project.tenant_id, project.name, str(number)),
        tenant_id=project.tenant_id,
        project_id=project.id,
        version_number=number,
        status=S.DRAFT.value,
        blueprint={
            "name": f"{project.name} v{number}",
            "trigger": {"type": "schedule", "cron": "0 * * * *"},
            "steps": [
                {"id": "fetch", "type": "http", "config": {"url": "https://example.invalid/api"}},
                {"id": "store", "type": "database", "depends_on": ["fetch"]},
            ],
        },
    )
    session.add(version)
    session.flush()
    _walk(session, version, PATH_TO[status])
    session.flush()
    past_build = status not in (S.DRAFT, S.BUILD_IN_PROGRESS, S.ERROR)
    session.add(
        models.Task(
            tenant_id=project.tenant_id,
            automation_version_id=version.id,
            kind="integration",
            title="Connect the source system's credentials",
            status=(models.TaskStatus.COMPLETE if past_build else models.TaskStatus.PENDING).value,
        )
    )
    binding_status = BINDING_FOR[status]
    if binding_status is None:
        return
    has_workflow = binding_status in (models.BindingStatus.ACTIVE, models.BindingStatus.INACTIVE)
    workflow_id = workflow_id_for(version.id, live=status is S.LIVE)
    session.add(
        models.WorkflowBinding(
            id=demo_id(version.id, "binding"),
            tenant_id=project.tenant_id,
            automation_version_id=version.id,
            status=binding_status.value,
            wrk_workflow_id=workflow_id if has_workflow else None,
            wrk_workflow_url=f"/workflows/{workflow_id}" if has_workflow else None,
            error={"message": "demo: blueprint rejected"} if binding_status is models.BindingStatus.ERROR else None,
        )
    )


def reset_demo(session: Session) -> dict[str, Any]:
    """Put the demo tenants back as seed-demo first made them: every row of theirs goes and is seeded again.

    Two things stay: the tenant rows, and their trigger_queue rows (live ones are cancelled). A trigger's
    id is in its run key, and on SQLite a deleted highest id would be handed out again: Dagster silently
    skips a run key it has seen, so a trigger id must never come back."""
    tenant_ids = demo_tenant_ids()
    live = select(models.TriggerQueue.id).where(
        models.TriggerQueue.tenant_id.in_(tenant_ids), models.TriggerQueue.state.in_(queue.LIVE)
    )
    for row_id in list(session.scalars(live)):
        queue.cancel(session, row_id)
    keep = {models.Tenant.__tablename__, models.TriggerQueue.__tablename__}
    # Children before parents; Core deletes, so no ORM status guard is involved.
    for table in reversed(models.Base.metadata.sorted_tables):
        if table.name not in keep and "tenant_id" in table.c:
            session.execute(delete(table).where(table.c.tenant_id.in_(tenant_ids)))
    session.flush()
    for spec in DEMO:
        _seed_tenant(session, spec)
    session.flush()
    return describe(session, tenant_ids)


# A fresh demo version can take any status but Live and Paused: the demo projects already have their one
# Live version (a deploy makes another one Live, through the lifecycle).
FRESH_STATUSES = [s for s in Status if s not in (S.LIVE, S.PAUSED)]
DEFAULT_PROJECT = {S.READY_TO_LAUNCH: "Order Sync"}


def demo_version(session: Session, status: Status, project_name: str | None = None) -> dict[str, Any]:
    """A new version of a demo project (first tenant), walked through the lifecycle to `status`, with the
    binding a version in that status has. Seeds the demo first if needed."""
    if status not in FRESH_STATUSES:
        raise ValueError(f"a fresh demo version cannot be {status.value!r}; one of {[s.value for s in FRESH_STATUSES]}")
    seed_demo(session)
    spec = DEMO[0]
    name = project_name or DEFAULT_PROJECT.get(status, "Invoice Intake")
    project = session.get(models.Project, demo_id(spec["name"], name))
    if project is None:
        raise ValueError(f"no demo project {name!r}; one of {[p[0] for p in spec['projects']]}")
    last = session.scalar(
        select(func.max(models.AutomationVersion.version_number)).where(
            models.AutomationVersion.tenant_id == project.tenant_id,
            models.AutomationVersion.project_id == project.id,
        )
    )
    _seed_version(session, project, (last or 0) + 1, status)
    session.flush()
    version = next(v for v in _describe_project(session, project)["versions"] if v["version_number"] == (last or 0) + 1)
    return {"tenant_id": project.tenant_id, "project_id": project.id, "project": project.name, **version}


def describe(session: Session, tenant_ids: list[str]) -> dict[str, Any]:
    """The seed-demo JSON: tenants, their users with roles, projects and versions with bindings."""
    out: list[dict[str, Any]] = []
    for tenant_id in tenant_ids:
        tenant = session.get(models.Tenant, tenant_id)
        if tenant is None:
            continue
        members = session.execute(
            select(models.User, models.TenantMembership.roles)
            .join(models.TenantMembership, models.TenantMembership.user_id == models.User.id)
            .where(models.TenantMembership.tenant_id == tenant_id)
            .order_by(models.User.email)
        ).all()
        projects = session.scalars(
            select(models.Project).where(models.Project.tenant_id == tenant_id).order_by(models.Project.name)
        ).all()
        out.append(
            {
                "id": tenant.id,
                "name": tenant.name,
                "users": [{"id": u.id, "email": u.email, "roles": list(roles)} for u, roles in members],
                "projects": [_describe_project(session, p) for p in projects],
            }
        )
    return {"tenants": out}


def _describe_project(session: Session, project: models.Project) -> dict[str, Any]:
    rows = session.execute(
        select(models.AutomationVersion, models.WorkflowBinding.id)
        .outerjoin(
            models.WorkflowBinding,
            models.WorkflowBinding.automation_version_id == models.AutomationVersion.id,
        )
        .where(models.AutomationVersion.tenant_id == project.tenant_id)
        .where(models.AutomationVersion.project_id == project.id)
        .order_by(models.AutomationVersion.version_number)
    ).all()
    return {
        "id": project.id,
        "name": project.name,
        "status": project.status,
        "versions": [
            {"id": v.id, "version_number": v.version_number, "status": v.status, "workflow_binding_id": b}
            for v, b in rows
        ],
    }

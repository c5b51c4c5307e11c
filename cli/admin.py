"""The store's and the settings' commands: check-settings, migrate, seed-demo, demo-version, token, and
the batch messages' list. Each prints JSON (or the one value asked for), as `make run`, the scripts and
the docs read it."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer
from sqlalchemy import func, select

from cli.demo import FRESH_STATUSES, demo_tenant_ids, demo_version, describe, reset_demo, seed_demo
from cli.output import EXIT_USAGE, fail
from domain.batch import batch_jobs
from domain.core import migrate, models
from domain.core.lifecycle import Status
from domain.core.settings import EXIT_MISCONFIGURED, get_settings
from domain.core.store import engine_for, read_transaction, transaction
from domain.core.tokens import InvalidTokenRequest, mint_dev_token

# The statuses a fresh demo version may take (the demo projects keep their one Live version).
FreshStatus = Enum("FreshStatus", {s.name: s.value for s in FRESH_STATUSES}, type=str)  # type: ignore[misc]

messages = typer.Typer(
    help="Batch-job messages.", epilog="Examples:\n\n  wrk-orch messages list --limit 5", no_args_is_help=True
)


def check_settings() -> None:
    get_settings()


check_settings.__doc__ = f"Load the settings; one line and exit {EXIT_MISCONFIGURED} when they cannot be used."


def migrate_store(revision: Annotated[str, typer.Option(help="the Alembic revision")] = "head") -> None:
    """Apply the store's migrations (DATABASE_URL); prints the database and its revision (JSON)."""
    engine = engine_for(get_settings().database_url)
    migrate.upgrade(engine, revision)
    print(json.dumps({"database": engine.url.render_as_string(), "revision": migrate.current_revision(engine)}))


def seed(
    if_empty: Annotated[bool, typer.Option("--if-empty", help="only when the store has no tenant yet")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="put the demo tenants back as first seeded")] = False,
) -> None:
    """Create the demo tenants and data (idempotent); prints one JSON object."""
    engine = engine_for(get_settings().database_url)
    if not migrate.at_head(engine):
        migrate.upgrade(engine)
    with transaction(engine) as session:
        if reset:
            print(json.dumps(reset_demo(session), indent=2))
        elif if_empty and session.scalar(select(func.count()).select_from(models.Tenant)):
            print(json.dumps(describe(session, demo_tenant_ids()), indent=2))
        else:
            print(json.dumps(seed_demo(session), indent=2))


def new_demo_version(
    status: Annotated[FreshStatus, typer.Option(help="the new version's status")],
    project: Annotated[
        str | None,
        typer.Option(help="a demo project (default: Order Sync for Ready to Launch, else Invoice Intake)"),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the version as JSON (tenant, project, binding)")
    ] = False,
) -> None:
    """Add a fresh version to a demo project, in a given status; prints its id."""
    engine = engine_for(get_settings().database_url)
    if not migrate.at_head(engine):
        migrate.upgrade(engine)
    try:
        with transaction(engine) as session:
            version = demo_version(session, Status(status.value), project)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    print(json.dumps(version) if json_out else version["id"])


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def token(
    tenant: Annotated[str, typer.Option(help="tenant id, or several separated by commas")] = "",
    roles: Annotated[
        str, typer.Option(help="roles held platform-wide and in every --tenant, separated by commas (ops_admin)")
    ] = "",
    tenant_roles: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TENANT=ROLES",
            help="roles in one tenant only, e.g. T2=client (repeatable); the token needs at least one tenant",
        ),
    ] = None,
    sub: Annotated[str, typer.Option(help="the subject (user id)")] = "dev-user",
    ttl: Annotated[int, typer.Option(help="lifetime in seconds (positive)")] = 3600,
) -> None:
    """Print a development JWT signed with the dev secret."""
    per_tenant: dict[str, list[str]] = {}
    for entry in tenant_roles or []:
        name, sep, held = entry.partition("=")
        if not sep or not name.strip():
            raise fail(f"--tenant-roles expects TENANT=ROLE1,ROLE2, not {entry!r}", EXIT_USAGE, "token")
        per_tenant[name.strip()] = _split(held)
    try:
        minted = mint_dev_token(
            get_settings(),
            tenants=_split(tenant),
            roles=_split(roles),
            tenant_roles=per_tenant,
            sub=sub,
            ttl_seconds=ttl,
        )
    except InvalidTokenRequest as exc:
        raise fail(str(exc), EXIT_USAGE, "token") from None
    print(minted)


@messages.command(
    "list",
    epilog="Examples:\n\n  wrk-orch messages list --job industry-benchmarks --limit 5",
)
def list_messages(
    job: Annotated[str | None, typer.Option(help="only this job (e.g. industry-benchmarks)")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 50,
) -> None:
    """The latest workflow.job.trigger messages in the outbox, newest first (JSON)."""
    name = job.replace("_", "-") if job else None
    if name is not None and name not in {j.name for j in batch_jobs.JOBS}:
        raise fail(f"unknown batch job {job!r}", EXIT_USAGE)
    engine = migrate.require_migrated(engine_for(get_settings().database_url))
    with read_transaction(engine) as session:
        rows = batch_jobs.latest(session, job=name, limit=limit)
        found = [
            {
                "message_id": row.message_id,
                "type": row.type,
                "job": row.job,
                "queue": row.queue,
                "status": row.status,
                "body": row.body,
                "attempts": row.attempts,
                "last_error": row.last_error,
                "created_at": row.created_at.isoformat(),
                "published_at": row.published_at.isoformat() if row.published_at else None,
            }
            for row in rows
        ]
    print(json.dumps({"messages": found}, indent=2))

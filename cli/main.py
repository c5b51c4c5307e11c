"""`wrk-orch`: the operator's command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from cli.demo import FRESH_STATUSES, demo_tenant_ids, demo_version, describe, reset_demo, seed_demo
from domain import deploy
from domain.batch import batch_jobs
from domain.core import lifecycle, logs, migrate, models
from domain.core.lifecycle import Status
from domain.core.settings import EXIT_MISCONFIGURED, ConfigurationError, get_settings, masked_url
from domain.core.store import engine_for, read_transaction, transaction
from domain.core.tokens import InvalidTokenRequest, mint_dev_token
from domain.queue import queue
from domain.release.release_graph import InvalidGraph, load_graph


def _cmd_check_settings(_args: argparse.Namespace) -> int:
    get_settings()
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    engine = engine_for(get_settings().database_url)
    migrate.upgrade(engine, args.revision)
    print(json.dumps({"database": engine.url.render_as_string(), "revision": migrate.current_revision(engine)}))
    return 0


def _cmd_seed_demo(args: argparse.Namespace) -> int:
    engine = engine_for(get_settings().database_url)
    if not migrate.at_head(engine):
        migrate.upgrade(engine)
    with transaction(engine) as session:
        if args.reset:
            print(json.dumps(reset_demo(session), indent=2))
            return 0
        if args.if_empty and session.scalar(select(func.count()).select_from(models.Tenant)):
            print(json.dumps(describe(session, demo_tenant_ids()), indent=2))
            return 0
        print(json.dumps(seed_demo(session), indent=2))
    return 0


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _cmd_demo_version(args: argparse.Namespace) -> int:
    engine = engine_for(get_settings().database_url)
    if not migrate.at_head(engine):
        migrate.upgrade(engine)
    try:
        with transaction(engine) as session:
            version = demo_version(session, Status(args.status), args.project)
    except ValueError as exc:
        print(f"wrk-orch: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(version) if args.json else version["id"])
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    tenant_roles: dict[str, list[str]] = {}
    for entry in args.tenant_roles:
        tenant, sep, roles = entry.partition("=")
        if not sep or not tenant.strip():
            print(f"wrk-orch token: --tenant-roles expects TENANT=ROLE1,ROLE2, not {entry!r}", file=sys.stderr)
            return 2
        tenant_roles[tenant.strip()] = _split(roles)
    try:
        token = mint_dev_token(
            get_settings(),
            tenants=_split(args.tenant),
            roles=_split(args.roles),
            tenant_roles=tenant_roles,
            sub=args.sub,
            ttl_seconds=args.ttl,
        )
    except InvalidTokenRequest as exc:
        print(f"wrk-orch token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _store() -> Engine:
    """The store of DATABASE_URL, refused unless migrated (the commands that migrate it themselves open it
    with engine_for)."""
    return migrate.require_migrated(engine_for(get_settings().database_url))


def _cmd_queue_stats(_args: argparse.Namespace) -> int:
    engine = _store()
    with transaction(engine) as session:
        print(json.dumps(queue.stats(session), indent=2))
    return 0


def _cmd_messages_list(args: argparse.Namespace) -> int:
    job = args.job.replace("_", "-") if args.job else None
    if job is not None and job not in {j.name for j in batch_jobs.JOBS}:
        print(f"wrk-orch: unknown batch job {args.job!r}", file=sys.stderr)
        return 2
    engine = _store()
    with read_transaction(engine) as session:
        rows = batch_jobs.latest(session, job=job, limit=args.limit)
        messages = [
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
    print(json.dumps({"messages": messages}, indent=2))
    return 0


def _cmd_release_plan(args: argparse.Namespace) -> int:
    try:
        graph = load_graph(Path(args.graph) if args.graph else None)
        if args.repositories:
            graph = graph.subset(args.repositories.split(","))
    except InvalidGraph as exc:
        print(f"wrk-orch: invalid release graph: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "order": graph.order,
                "groups": [list(group) for group in graph.groups],
                "repositories": {
                    n: {"owner": r.owner, "workflow": r.workflow, "depends_on": list(r.depends_on)}
                    for n, r in graph.repositories.items()
                },
            },
            indent=2,
        )
    )
    return 0


def _deploy_saga() -> tuple[deploy.Saga, frozenset[str]]:
    # Imported at call time: the WRK client's module also defines its Dagster resource (slow to import,
    # and outside domain/'s strictly typed scope).
    wrk = importlib.import_module("resources.wrk")
    settings = get_settings()
    engine = _store()
    saga = deploy.Saga(
        engine=engine,
        platform=wrk.wrk_client(settings),
        ops_email=settings.ops_email,
        deadline_s=settings.deploy_deadline_s,
        project_live=settings.project_live_on_deploy,
        slack=bool(settings.slack_webhook_url),
    )
    with transaction(engine) as session:
        tenants = frozenset(session.scalars(select(models.Tenant.id)))  # an operator acts on every tenant
    return saga, tenants


def _print_outcome(call: Callable[[], deploy.Outcome]) -> int:
    try:
        outcome = call()
    except deploy.DeployRefused as refused:
        print(json.dumps({"status": refused.status, "code": refused.code, "detail": refused.detail, **refused.extra}))
        return 1
    except lifecycle.InvalidStatusTransition as exc:
        print(json.dumps({"status": 409, "code": exc.code, "detail": str(exc)}))
        return 1
    print(json.dumps(outcome.body, indent=2))
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    saga, tenants = _deploy_saga()
    request = deploy.Request(
        actor=lifecycle.Actor.user(args.actor), reason=args.reason, notes=args.notes, invoked_via="cli"
    )
    return _print_outcome(lambda: deploy.change_status(saga, tenants, args.version, args.status, request))


def _cmd_rollback(args: argparse.Namespace) -> int:
    saga, tenants = _deploy_saga()
    request = deploy.Request(
        actor=lifecycle.Actor.user(args.actor), reason=args.reason, notes=args.notes, invoked_via="cli"
    )
    return _print_outcome(lambda: deploy.rollback(saga, tenants, args.project, args.to, request))


def _cmd_reconcile_deployments(_args: argparse.Namespace) -> int:
    saga, _tenants = _deploy_saga()
    report = deploy.reconcile(saga)
    print(json.dumps(report.as_dict(), indent=2))
    return 1 if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrk-orch", description="WRK orchestration operator commands")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "check-settings", help=f"load the settings; one line and exit {EXIT_MISCONFIGURED} when they cannot be used"
    )
    p.set_defaults(func=_cmd_check_settings)

    p = sub.add_parser("migrate", help="apply the store's migrations (DATABASE_URL)")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("seed-demo", help="create the demo tenants and data (idempotent); prints JSON")
    p.add_argument("--if-empty", action="store_true", help="only when the store has no tenant yet")
    p.add_argument("--reset", action="store_true", help="put the demo tenants back as first seeded")
    p.set_defaults(func=_cmd_seed_demo)

    p = sub.add_parser("demo-version", help="add a fresh version to a demo project, in a given status; prints its id")
    p.add_argument("--status", required=True, choices=[s.value for s in FRESH_STATUSES])
    p.add_argument("--project", help="a demo project (default: Order Sync for Ready to Launch, else Invoice Intake)")
    p.add_argument("--json", action="store_true", help="print the version as JSON (tenant, project, binding)")
    p.set_defaults(func=_cmd_demo_version)

    p = sub.add_parser("token", help="print a development JWT signed with the dev secret")
    p.add_argument("--tenant", default="", help="tenant id, or several separated by commas")
    p.add_argument(
        "--roles", default="", help="roles held platform-wide and in every --tenant, separated by commas (ops_admin)"
    )
    p.add_argument(
        "--tenant-roles",
        action="append",
        default=[],
        metavar="TENANT=ROLES",
        help="roles in one tenant only, e.g. T2=client (repeatable); the token needs at least one tenant",
    )
    p.add_argument("--sub", default="dev-user", help="the subject (user id)")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (positive)")
    p.set_defaults(func=_cmd_token)

    q = sub.add_parser("queue", help="the trigger queue").add_subparsers(dest="queue_command", required=True)
    p = q.add_parser("stats", help="rows per kind and state, the oldest available and oldest launched age (JSON)")
    p.set_defaults(func=_cmd_queue_stats)

    m = sub.add_parser("messages", help="batch-job messages").add_subparsers(dest="messages_command", required=True)
    p = m.add_parser("list", help="the latest workflow.job.trigger messages in the outbox, newest first (JSON)")
    p.add_argument("--job", help="only this job (e.g. industry-benchmarks)")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    p.set_defaults(func=_cmd_messages_list)

    r = sub.add_parser("release", help="release builds").add_subparsers(dest="release_command", required=True)
    p = r.add_parser("plan", help="the release graph's build order and parallel groups (JSON)")
    p.add_argument("--graph", help="a graph YAML file (default: the shipped orchestration_defs/release_graph.yaml)")
    p.add_argument("--repositories", help="only these repositories (comma-separated) and their dependencies")
    p.set_defaults(func=_cmd_release_plan)

    p = sub.add_parser("deploy", help="deploy, resume or pause a version through the deploy saga (JSON)")
    p.add_argument("version", help="the automation version id")
    p.add_argument("--status", required=True, choices=["Live", "Paused"])
    p.add_argument("--reason", help="the deployment reason (audited)")
    p.add_argument("--notes", help="notes (audited)")
    p.add_argument("--actor", default=_operator(), help="who asks (audited; default: $USER)")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("rollback", help="make the previous Live version (or --to an Archived one) Live again")
    p.add_argument("project", help="the project id")
    p.add_argument("--to", help="an Archived version id (default: the previous Live version)")
    p.add_argument("--reason", help="why (audited)")
    p.add_argument("--notes", help="notes (audited)")
    p.add_argument("--actor", default=_operator(), help="who asks (audited; default: $USER)")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser(
        "reconcile-deployments", help="finish or undo interrupted deploys; align the platform with the store"
    )
    p.set_defaults(func=_cmd_reconcile_deployments)
    return parser


def _operator() -> str:
    return os.environ.get("USER") or "operator"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        logs.configure("wrk-orch", settings.log_level, settings.log_format)
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"wrk-orch: configuration: {exc}", file=sys.stderr)
        return EXIT_MISCONFIGURED
    except migrate.StoreNotMigrated as exc:
        print(f"wrk-orch: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(
            f"wrk-orch: the store at {masked_url(get_settings().database_url)} cannot be used ({exc.orig}); "
            "is DATABASE_URL right, and has `wrk-orch migrate` run?",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

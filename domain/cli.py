"""`wrk-orch`: the operator's command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from domain import migrate, models, queue
from domain.demo import FRESH_STATUSES, demo_tenant_ids, demo_version, describe, reset_demo, seed_demo
from domain.lifecycle import Status
from domain.release_graph import InvalidGraph, load_graph
from domain.settings import get_settings
from domain.store import engine_for, transaction
from domain.tokens import mint_dev_token


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
    tenants = [t for t in args.tenant.split(",") if t]
    roles = [r for r in args.roles.split(",") if r]
    print(mint_dev_token(get_settings(), tenants=tenants, roles=roles, sub=args.sub, ttl_seconds=args.ttl))
    return 0


def _cmd_queue_stats(_args: argparse.Namespace) -> int:
    engine = engine_for(get_settings().database_url)
    with transaction(engine) as session:
        print(json.dumps(queue.stats(session), indent=2))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrk-orch", description="WRK orchestration operator commands")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.add_argument("--tenant", required=True, help="tenant id, or several separated by commas")
    p.add_argument("--roles", required=True, help="roles separated by commas, e.g. ops_admin")
    p.add_argument("--sub", default="dev-user", help="the subject (user id)")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    p.set_defaults(func=_cmd_token)

    q = sub.add_parser("queue", help="the trigger queue").add_subparsers(dest="queue_command", required=True)
    p = q.add_parser("stats", help="rows per kind and state, and the oldest available age (JSON)")
    p.set_defaults(func=_cmd_queue_stats)

    r = sub.add_parser("release", help="release builds").add_subparsers(dest="release_command", required=True)
    p = r.add_parser("plan", help="the release graph's build order and parallel groups (JSON)")
    p.add_argument("--graph", help="a graph YAML file (default: the shipped orchestration_defs/release_graph.yaml)")
    p.add_argument("--repositories", help="only these repositories (comma-separated) and their dependencies")
    p.set_defaults(func=_cmd_release_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except OperationalError as exc:
        print(
            f"wrk-orch: the store at {get_settings().database_url} cannot be used ({exc.orig}); "
            "is DATABASE_URL right, and has `wrk-orch migrate` run?",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`wrk-orch deploy`: deploy, resume or pause a version and roll a project back through the deploy saga
(on the store, as an operator of every tenant); a project's deploy status and history through the API."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from rich.console import Group
from rich.text import Text
from sqlalchemy import select
from typer.core import TyperGroup

from cli.http import Api, ApiUrl, Json, Tenant, Token, segment
from cli.output import EXIT_FAILED, age, fields, present_page, print_json, show, table, when
from domain import deploy
from domain.core import lifecycle, migrate, models
from domain.core.settings import get_settings
from domain.core.store import engine_for, transaction

CHANGE = "change"  # the hidden name of `deploy VERSION --status ...`


class DeployGroup(TyperGroup):
    """`deploy status|history PROJECT`, and `deploy VERSION --status Live|Paused` as before: anything
    that is not a subcommand's name is the version form."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [CHANGE, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=DeployGroup,
    help="Deploy, resume or pause a version (`deploy VERSION --status Live|Paused`, through the deploy saga); "
    "a project's deploy status and history (through the API).",
    epilog="Examples:\n\n  wrk-orch deploy 5f0c... --status Live --reason 'weekly release'\n\n"
    "  wrk-orch deploy status 9a1e... --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch deploy history 9a1e... --json",
    no_args_is_help=True,
)


def operator() -> str:
    return os.environ.get("USER") or "operator"


Actor = Annotated[str | None, typer.Option(help="who asks (audited; default: $USER)")]
Reason = Annotated[str | None, typer.Option(help="why (audited)")]
Notes = Annotated[str | None, typer.Option(help="notes (audited)")]


def _saga() -> tuple[deploy.Saga, frozenset[str]]:
    # Imported at call time: the WRK client's module also defines its Dagster resource (slow to import,
    # and outside domain/'s strictly typed scope).
    wrk = importlib.import_module("resources.wrk")
    settings = get_settings()
    engine = migrate.require_migrated(engine_for(settings.database_url))
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


def _request(actor: str | None, reason: str | None, notes: str | None) -> deploy.Request:
    return deploy.Request(
        actor=lifecycle.Actor.user(actor or operator()), reason=reason, notes=notes, invoked_via="cli"
    )


def _print_outcome(call: Callable[[], deploy.Outcome]) -> None:
    try:
        outcome = call()
    except deploy.DeployRefused as refused:
        print(json.dumps({"status": refused.status, "code": refused.code, "detail": refused.detail, **refused.extra}))
        raise typer.Exit(EXIT_FAILED) from None
    except lifecycle.InvalidStatusTransition as exc:
        print(json.dumps({"status": 409, "code": exc.code, "detail": str(exc)}))
        raise typer.Exit(EXIT_FAILED) from None
    print(json.dumps(outcome.body, indent=2))


@app.command(CHANGE, hidden=True)
def change(
    version: Annotated[str, typer.Argument(help="the automation version id")],
    status: Annotated[Literal["Live", "Paused"], typer.Option(help="Live (deploy or resume) or Paused")],
    reason: Reason = None,
    notes: Notes = None,
    actor: Actor = None,
) -> None:
    """Deploy, resume or pause a version through the deploy saga (JSON)."""
    saga, tenants = _saga()
    request = _request(actor, reason, notes)
    _print_outcome(lambda: deploy.change_status(saga, tenants, version, status, request))


def rollback(
    project: Annotated[str, typer.Argument(help="the project id")],
    to: Annotated[str | None, typer.Option(help="an Archived version id (default: the previous Live version)")] = None,
    reason: Reason = None,
    notes: Notes = None,
    actor: Actor = None,
) -> None:
    """Make the previous Live version (or --to an Archived one) Live again (JSON)."""
    saga, tenants = _saga()
    request = _request(actor, reason, notes)
    _print_outcome(lambda: deploy.rollback(saga, tenants, project, to, request))


def reconcile_deployments() -> None:
    """Finish or undo interrupted deploys; align the platform with the store (JSON)."""
    saga, _tenants = _saga()
    report = deploy.reconcile(saga)
    print(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def _version(v: dict[str, Any] | None) -> str:
    return "-" if v is None else f"#{v['version_number']} {v['id']}"


def _deployment_row(d: dict[str, Any]) -> tuple[Any, ...]:
    version = f"#{d['version_number']}" if d["version_number"] is not None else d["automation_version_id"]
    return (when(d["created_at"]), d["action"], version, d["status"], d["actor_id"], d["invoked_via"], d["reason"])


DEPLOYMENT_COLUMNS = ["When", "Action", "Version", "Status", "Actor", "Via", "Reason"]


@app.command(
    epilog="Examples:\n\n  wrk-orch deploy status 9a1e... --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch deploy status 9a1e... --json | jq .live_version",
)
def status(
    project: Annotated[str, typer.Argument(help="the project id")],
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """A project's deploy status: its Live version, every version's status, the last deployment."""
    found = Api.of(api_url, token, tenant).get(f"/v1/projects/{segment(project)}")
    if json_out:
        print_json(found)
        return
    live = found["live_version"]
    last = found["last_deployment"]
    show(
        Group(
            fields(
                f"Project {found['name']}",
                [
                    ("id", found["id"]),
                    ("status", found["status"]),
                    ("live", _version(live)),
                    ("deployed", f"{when(live['deployed_at'])} by {live['deployed_by']}" if live else None),
                    (
                        "last deployment",
                        f"{last['action']} {last['status']} {age(last['created_at'])} ago by {last['actor_id']}"
                        if last
                        else None,
                    ),
                ],
            ),
            Text(""),
            table(
                None,
                ["Version", "Status", "Since", "Deployed", "By", "Id"],
                [
                    (
                        f"#{v['version_number']}",
                        v["status"],
                        when(v["status_changed_at"]),
                        when(v["deployed_at"]),
                        v["deployed_by"],
                        v["id"],
                    )
                    for v in found["versions"]
                ],
            ),
        )
    )


@app.command(
    epilog="Examples:\n\n  wrk-orch deploy history 9a1e... --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch deploy history 9a1e... --limit 100 --json",
)
def history(
    project: Annotated[str, typer.Argument(help="the project id")],
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many, newest first")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="skip this many")] = 0,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """A project's deploy history: every deploy, resume, pause and rollback, newest first."""
    page = Api.of(api_url, token, tenant).get(
        f"/v1/projects/{segment(project)}/deployments", limit=limit, offset=offset
    )
    present_page(page, DEPLOYMENT_COLUMNS, _deployment_row, json_out, "deployments")

"""`wrk-orch executions`: workflow executions through the API (in the tenant of --tenant): list, show
(and follow), cancel."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from cli.http import Api, ApiUrl, Json, Tenant, Token, segment
from cli.output import EXIT_FAILED, fail, fields, present, present_page, print_json, table, when
from cli.watch import Interval, watch

app = typer.Typer(
    help="Workflow executions: list, show (and follow) and cancel them.",
    epilog="Examples:\n\n  wrk-orch executions list --status running\n\n  wrk-orch executions show 7b1f... --watch",
    no_args_is_help=True,
)

ENDED = {"succeeded", "failed", "rejected", "cancelled"}


def progress(e: dict[str, Any]) -> str:
    p = e["progress"]
    return f"{p['done']}/{p['total']}" + (f" ({p['failed']} failed)" if p["failed"] else "")


@app.command(
    "list",
    epilog="Examples:\n\n  wrk-orch executions list --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch executions list --status running,waiting_approval --json",
)
def list_executions(
    status: Annotated[str | None, typer.Option(help="only these statuses, comma-separated")] = None,
    workflow: Annotated[str | None, typer.Option(help="only executions of this workflow id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many, newest first")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="skip this many")] = 0,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """Executions, newest first."""
    page = Api.of(api_url, token, tenant).get(
        "/v1/workflow-executions", status=status, workflow_id=workflow, limit=limit, offset=offset
    )
    columns = ["Id", "Workflow", "Version", "Status", "Steps done", "Created", "Finished"]
    present_page(page, columns, _row, json_out, "executions")


def _row(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["id"],
        e["workflow_id"],
        e["version"],
        e["status"],
        progress(e),
        when(e["created_at"]),
        when(e["finished_at"]),
    )


def view(e: dict[str, Any]) -> Group:
    return Group(
        fields(
            "Execution",
            [
                ("id", e["id"]),
                ("status", e["status"]),
                ("workflow", f"{e['workflow_id']} v{e['version']}"),
                ("steps done", progress(e)),
                ("created", when(e["created_at"])),
                ("started", when(e["started_at"])),
                ("finished", when(e["finished_at"])),
                ("dagster run", e.get("dagster_run_id")),
                ("error", e.get("error")),
            ],
        ),
        Text(""),
        table(
            None,
            ["Step", "Kind", "Status", "Attempts", "Started", "Finished", "Error"],
            [
                (
                    s["name"],
                    s["kind"],
                    s["status"],
                    s["attempts"],
                    when(s["started_at"]),
                    when(s["finished_at"]),
                    s["error"],
                )
                for s in e["steps"]
            ],
        ),
    )


def line(e: dict[str, Any]) -> str:
    steps = ", ".join(f"{s['name']}={s['status']}" for s in e["steps"])
    return f"{e['id']}: {e['status']} ({progress(e)} steps done) {steps}".rstrip()


@app.command(
    "show",
    epilog="Examples:\n\n  wrk-orch executions show 7b1f... --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch executions show 7b1f... --watch\n\n  wrk-orch executions show 7b1f... --json | jq .steps",
)
def show_execution(
    execution_id: Annotated[str, typer.Argument(metavar="ID", help="the execution's id")],
    watch_it: Annotated[
        bool,
        typer.Option("--watch", help="follow it until it ends (exit 1 when it fails, is rejected or cancelled)"),
    ] = False,
    interval: Interval = 2.0,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """An execution: its status, progress and each step's state."""
    api = Api.of(api_url, token, tenant)
    path = f"/v1/workflow-executions/{segment(execution_id)}"
    if not watch_it:
        execution = api.get(path)
        present(execution, view, json_out)
        return
    execution = watch(lambda: api.get(path), view, line, lambda e: e["status"] in ENDED, interval, json_out)
    if json_out:
        print_json(execution)
    if execution["status"] != "succeeded":
        raise fail(f"execution {execution['id']} ended {execution['status']}", EXIT_FAILED)


@app.command(
    epilog="Examples:\n\n  wrk-orch executions cancel 7b1f... --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch executions cancel 7b1f... --json",
)
def cancel(
    execution_id: Annotated[str, typer.Argument(metavar="ID", help="the execution's id")],
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """Cancel a live execution (its open approvals are cancelled too); one that ended exits 4 (conflict)."""
    execution = Api.of(api_url, token, tenant).post(f"/v1/workflow-executions/{segment(execution_id)}/cancel")
    present(execution, view, json_out)

"""`wrk-orch approvals`: list, show and decide human approvals through the API (in the tenant of
--tenant: the approval routes always name it)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from cli.http import Api, ApiUrl, Json, Tenant, Token, segment
from cli.output import EXIT_USAGE, age, fail, fields, present, present_page, table, when

app = typer.Typer(
    help="Human approvals: list, show and decide them.",
    epilog="Examples:\n\n  wrk-orch approvals list --mine\n\n"
    "  wrk-orch approvals decide 3c2d... --approve --comment ok",
    no_args_is_help=True,
)

STATUSES = ["pending", "approved", "rejected", "expired", "cancelled"]
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command(
    "list",
    epilog="Examples:\n\n  wrk-orch approvals list --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch approvals list --mine --status pending --json",
)
def list_approvals(
    status: Annotated[str, typer.Option(help=f"only this status ({', '.join(STATUSES)}), or all")] = "pending",
    mine: Annotated[bool, typer.Option("--mine", help="only those assigned to you (or one of your roles)")] = False,
    execution: Annotated[str | None, typer.Option(help="only those of this workflow execution")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many, newest first")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="skip this many")] = 0,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """Approvals, newest first (default: the pending ones)."""
    if status != "all" and status not in STATUSES:
        raise fail(f"--status must be one of {', '.join(STATUSES)} or all", EXIT_USAGE)
    page = Api.of(api_url, token, tenant).get(
        "/v1/hitl/approvals",
        status=None if status == "all" else status,
        mine="true" if mine else None,
        execution_id=execution,
        limit=limit,
        offset=offset,
    )
    columns = ["Id", "Status", "Step", "Message", "Assignees", "Age", "Expires"]
    present_page(page, columns, _row, json_out)


def _row(a: dict[str, Any]) -> tuple[Any, ...]:
    return (
        a["id"],
        a["status"],
        a["step_name"],
        _short(a["message"]),
        ", ".join(a["assignees"]),
        age(a["created_at"]),
        age(a["expires_at"]) if a["status"] == "pending" else "-",
    )


def view(approval: dict[str, Any]) -> Group:
    decided = approval.get("decided_by")
    parts: list[Any] = [
        fields(
            "Approval",
            [
                ("id", approval["id"]),
                ("status", approval["status"] + (f" ({approval['outcome']})" if approval.get("outcome") else "")),
                ("message", approval["message"]),
                ("execution", approval.get("workflow_execution_id")),
                ("step", approval.get("step_name")),
                ("requested by", approval["requested_by"]),
                ("assignees", ", ".join(approval["assignees"])),
                ("created", when(approval["created_at"])),
                ("expires", when(approval["expires_at"])),
                ("on timeout", approval["on_timeout"]),
                ("decided", f"{when(approval['decided_at'])} by {decided}" if decided else None),
                ("comment", approval.get("decision_comment")),
                *((f"context.{k}", v) for k, v in (approval.get("context") or {}).items()),
                *((f"field {k}", v) for k, v in (approval.get("field_values") or {}).items()),
            ],
        )
    ]
    declared = approval.get("fields") or []
    if declared and approval["status"] == "pending":
        parts += [
            Text(""),
            table(
                "Decision fields (--field NAME=VALUE)",
                ["Name", "Type", "Required", "Options", "Default", "Help"],
                [
                    (
                        f["name"],
                        f["type"],
                        f.get("required"),
                        ", ".join(f.get("options") or []),
                        f.get("default"),
                        f.get("help"),
                    )
                    for f in declared
                ],
            ),
        ]
    if approval.get("audit"):
        parts += [
            Text(""),
            table(
                "Audit",
                ["When", "Action", "Actor", "Status", "Reason"],
                [
                    (
                        when(e["created_at"]),
                        e["action"],
                        e["actor_id"],
                        f"{e['previous_status'] or '-'} -> {e['new_status']}" if e["new_status"] else None,
                        e["reason"],
                    )
                    for e in approval["audit"]
                ],
            ),
        ]
    return Group(*parts)


@app.command(
    "show",
    epilog="Examples:\n\n  wrk-orch approvals show 3c2d... --tenant $TENANT --token $TOKEN\n\n"
    "  wrk-orch approvals show 3c2d... --json | jq .audit",
)
def show_approval(
    approval_id: Annotated[str, typer.Argument(metavar="ID", help="the approval's id")],
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """An approval: its message, context, decision fields, outcome and audit trail."""
    approval = Api.of(api_url, token, tenant).get(f"/v1/hitl/approvals/{segment(approval_id)}")
    present(approval, view, json_out)


def pairs(given: list[str]) -> dict[str, str]:
    """`NAME=VALUE` options, checked before any call."""
    out: dict[str, str] = {}
    for pair in given:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise fail(f"--field expects NAME=VALUE, not {pair!r}", EXIT_USAGE)
        out[name.strip()] = raw
    return out


def field_values(given: dict[str, str], declared: list[dict[str, Any]]) -> dict[str, Any]:
    """The values as the approval's declared fields type them: a number parsed, a boolean from
    true/false (yes/no, on/off, 1/0), anything else text. The API validates the rest (422 naming the field)."""
    types = {f["name"]: f["type"] for f in declared}
    values: dict[str, Any] = {}
    for name, raw in given.items():
        kind = types.get(name)
        value: Any = raw
        if kind == "number":
            try:
                value = int(raw) if raw.strip().lstrip("+-").isdigit() else float(raw)
            except ValueError:
                raise fail(f"--field {name}: {raw!r} is not a number", EXIT_USAGE) from None
        elif kind == "boolean":
            if raw.lower() not in TRUE | FALSE:
                raise fail(f"--field {name}: {raw!r} is not true or false", EXIT_USAGE)
            value = raw.lower() in TRUE
        values[name] = value
    return values


@app.command(
    epilog="Examples:\n\n  wrk-orch approvals decide 3c2d... --approve --comment 'looks right'\n\n"
    "  wrk-orch approvals decide 3c2d... --reject --comment 'wrong amount'\n\n"
    "  wrk-orch approvals decide 3c2d... --approve --field amount=120.5 --field region=eu --field urgent=true",
)
def decide(
    approval_id: Annotated[str, typer.Argument(metavar="ID", help="the approval's id")],
    approve: Annotated[bool, typer.Option("--approve", help="approve it")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="reject it")] = False,
    comment: Annotated[str | None, typer.Option(help="a comment (kept with the decision)")] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", metavar="NAME=VALUE", help="a decision field's value (repeatable)")
    ] = None,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """Approve or reject an approval (exactly one decision wins: a later one exits 4, conflict)."""
    if approve == reject:
        raise fail("give exactly one of --approve or --reject", EXIT_USAGE)
    given = pairs(field or [])
    api = Api.of(api_url, token, tenant)
    path = f"/v1/hitl/approvals/{segment(approval_id)}"
    body: dict[str, Any] = {"decision": "approve" if approve else "reject"}
    if comment is not None:
        body["comment"] = comment
    if given:
        body["fields"] = field_values(given, api.get(path).get("fields") or [])
    decided = api.post(f"{path}/decision", body)
    present(decided, view, json_out)

"""`wrk-orch queue`: the trigger queue's stats (on the store, JSON), one trigger and the requeue of a dead
one (through the API, audited under the token's subject)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli.http import Api, ApiUrl, Json, Tenant, Token
from cli.output import fields, print_json, show, when
from domain.core import migrate
from domain.core.settings import get_settings
from domain.core.store import engine_for, transaction
from domain.queue import queue

app = typer.Typer(
    help="The trigger queue: stats, one trigger, requeue a dead one.",
    epilog="Examples:\n\n  wrk-orch queue stats\n\n  wrk-orch queue requeue 42",
    no_args_is_help=True,
)

TriggerId = Annotated[int, typer.Argument(metavar="ID", min=1, help="the trigger's id")]


@app.command(epilog="Examples:\n\n  wrk-orch queue stats\n\n  wrk-orch queue stats | jq '.kinds.build.states'")
def stats() -> None:
    """Rows per kind and state, the oldest available and oldest launched age (JSON, from the store)."""
    engine = migrate.require_migrated(engine_for(get_settings().database_url))
    with transaction(engine) as session:
        print(json.dumps(queue.stats(session), indent=2))


def view(t: dict[str, Any]) -> Any:
    return fields(
        f"Trigger {t['id']}",
        [
            ("kind", t["kind"]),
            ("state", t["state"]),
            ("tenant", t["tenant_id"]),
            ("attempts", f"{t['attempts']}/{t['max_attempts']}"),
            ("dedup key", t["dedup_key"]),
            ("dagster run", t["run_id"]),
            ("last error", t["last_error"]),
            ("available", when(t["available_at"])),
            ("created", when(t["created_at"])),
            ("finished", when(t["finished_at"])),
        ],
    )


@app.command(
    "show",
    epilog="Examples:\n\n  wrk-orch queue show 42 --token $TOKEN\n\n  wrk-orch queue show 42 --json | jq .state",
)
def show_trigger(
    trigger_id: TriggerId,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """One trigger: its state, attempts, run and last error."""
    trigger = Api.of(api_url, token, tenant).get(f"/v1/queue/{trigger_id}")
    if json_out:
        print_json(trigger)
    else:
        show(view(trigger))


@app.command(
    epilog="Examples:\n\n  wrk-orch queue requeue 42 --token $TOKEN\n\n  wrk-orch queue requeue 42 --json",
)
def requeue(
    trigger_id: TriggerId,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """Requeue a dead trigger (audited); a trigger that is not dead exits 4 (conflict)."""
    trigger = Api.of(api_url, token, tenant).post(f"/v1/queue/{trigger_id}/requeue")
    if json_out:
        print_json(trigger)
    else:
        show(view(trigger))

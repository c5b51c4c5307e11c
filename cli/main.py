"""`wrk-orch`: the operator's command line. The command groups live in their own modules; this one puts
them together and turns every error into one line on stderr and an exit code (docs/cli.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Annotated, Any

import typer
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup

from cli import admin, approvals, deploys, executions, queue, releases
from cli.http import ApiError
from cli.output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, fail
from domain.core import logs, migrate
from domain.core.settings import ConfigurationError, get_settings, masked_url

EXAMPLES = """Examples:

  wrk-orch migrate && wrk-orch seed-demo

  export WRK_ORCH_TOKEN=$(wrk-orch token --tenant $TENANT --roles ops_admin) WRK_ORCH_TENANT=$TENANT

  wrk-orch release run v1.4.0 --watch

  wrk-orch approvals list

  wrk-orch executions show 7b1f... --watch

Exit codes: 0 ok, 1 failed, 2 usage or settings, 3 not found, 4 conflict, 5 unauthorized or forbidden, \
6 API unreachable, 130 interrupted (docs/cli.md)."""


class Root(TyperGroup):
    """Every command's errors as one line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise fail(exc.line, exc.exit_code) from None
        except ConfigurationError as exc:
            raise fail(f"configuration: {exc}", EXIT_USAGE) from None
        except migrate.StoreNotMigrated as exc:
            raise fail(str(exc), EXIT_FAILED) from None
        except OperationalError as exc:
            raise fail(
                f"the store at {masked_url(get_settings().database_url)} cannot be used ({exc.orig}); "
                "is DATABASE_URL right, and has `wrk-orch migrate` run?",
                EXIT_FAILED,
            ) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None


app = typer.Typer(
    cls=Root,
    name="wrk-orch",
    add_completion=False,
    help="WRK orchestration operator commands: the store, releases, deploys, approvals, executions, the queue.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 120},
)


def _version(shown: bool) -> None:
    if shown:
        print(f"wrk-orch {version('wrk-orchestration')}")
        raise typer.Exit()


@app.callback()
def root(
    _version_flag: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    try:  # the log format of the settings; a command that needs settings reports them broken itself
        settings = get_settings()
    except ConfigurationError:
        return
    logs.configure("wrk-orch", settings.log_level, settings.log_format)


def _examples(*lines: str) -> str:
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


app.command("check-settings", epilog=_examples("wrk-orch check-settings"))(admin.check_settings)
app.command("migrate", epilog=_examples("wrk-orch migrate", "wrk-orch migrate --revision 0010"))(admin.migrate_store)
app.command(
    "seed-demo", epilog=_examples("wrk-orch seed-demo", "wrk-orch seed-demo --if-empty", "wrk-orch seed-demo --reset")
)(admin.seed)
app.command(
    "demo-version",
    epilog=_examples("wrk-orch demo-version --status 'Ready to Launch' --json", "wrk-orch demo-version --status Draft"),
)(admin.new_demo_version)
app.command(
    "token",
    epilog=_examples(
        "wrk-orch token --tenant $TENANT --roles ops_admin --sub olivia",
        "wrk-orch token --tenant T1,T2 --roles ops_build --tenant-roles T2=client --ttl 600",
    ),
)(admin.token)
app.command(
    "rollback",
    epilog=_examples("wrk-orch rollback 9a1e... --reason 'bad release'", "wrk-orch rollback 9a1e... --to 5f0c..."),
)(deploys.rollback)
app.command("reconcile-deployments", epilog=_examples("wrk-orch reconcile-deployments"))(deploys.reconcile_deployments)
app.add_typer(releases.app, name="release")
app.add_typer(deploys.app, name="deploy")
app.add_typer(approvals.app, name="approvals")
app.add_typer(executions.app, name="executions")
app.add_typer(queue.app, name="queue")
app.add_typer(admin.messages, name="messages")

command = typer.main.get_command(app)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run one command; its exit code."""
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name="wrk-orch", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    return 0


if __name__ == "__main__":
    sys.exit(main())

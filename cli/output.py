"""What `wrk-orch` prints: Rich tables and summaries for people (no colour when stdout is not a terminal
or NO_COLOR is set, which Rich honours), the API's JSON for scripts, and the exit codes (docs/cli.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from domain.core.settings import EXIT_MISCONFIGURED

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed: a failed release or execution, a refused deploy, a broken store
EXIT_USAGE = EXIT_MISCONFIGURED  # 2: a usage error, invalid settings, a request the API calls invalid
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_DENIED = 5  # unauthorized or forbidden
EXIT_UNREACHABLE = 6
EXIT_INTERRUPTED = 130  # Ctrl-C

# Wide enough for ids and URLs when stdout is a pipe (Rich's own default there is 80 columns).
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(line: str, code: int, command: str | None = None) -> typer.Exit:
    """Print `wrk-orch: line` (`wrk-orch COMMAND: line`) to stderr on one line; the exit to raise."""
    errors.print(f"wrk-orch{' ' + command if command else ''}: {' '.join(line.split())}", markup=False)
    return typer.Exit(code)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def present(value: Any, view: Callable[[Any], Any], json_out: bool) -> None:
    """The API's JSON with --json, else the command's human view of it."""
    if json_out:
        print_json(value)
    else:
        show(view(value))


def present_page(
    page: dict[str, Any],
    columns: Sequence[str],
    row: Callable[[Any], Sequence[Any]],
    json_out: bool,
    noun: str | None = None,
    items: str = "items",
) -> None:
    """A listing: the API's JSON with --json, else a table of its `items` (titled `n of total <noun>`)."""

    def listing(answer: dict[str, Any]) -> Table:
        found = answer[items]
        title = f"{len(found)} of {answer['total']} {noun}" if noun else None
        return table(title, columns, [row(x) for x in found])

    present(page, listing, json_out)


def when(value: str | None) -> str:
    """An API timestamp as a person reads it: `2026-12-07 09:30:12 UTC`."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(value: str | None, now: datetime | None = None) -> str:
    """How long ago (or, for a future moment, how long until): `3m`, `2h 5m`, `in 4h`."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    ahead, seconds = seconds < 0, abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes}m"
    elif minutes:
        text = f"{minutes}m"
    else:
        text = f"{secs}s"
    return f"in {text}" if ahead else text


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold", show_lines=False)
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    if not out.row_count:
        out.caption = "(none)"
    return out


def fields(title: str | None, pairs: Iterable[tuple[str, Any]]) -> Table:
    """A summary: one `name  value` line per pair."""
    out = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    out.add_column(style="bold", no_wrap=True)
    out.add_column(overflow="fold")
    for name, value in pairs:
        out.add_row(name, cell(value))
    return out


def show(*renderables: Any) -> None:
    for renderable in renderables:
        console.print(renderable)

"""Parse a `wrk-orch` command line without running it: whether the CLI accepts it (docs' recipes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cli.main import command


def parse(args: Sequence[str]) -> Any:
    """The innermost command's context; raises the CLI's usage error (or its exit) when refused."""
    cmd: Any = command
    name, rest, parent = "wrk-orch", list(args), None
    while True:
        ctx = cmd.make_context(name, rest, parent=parent)
        if not hasattr(cmd, "resolve_command"):
            return ctx
        name, cmd, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        parent = ctx


def accepted(args: Sequence[str]) -> bool:
    try:
        parse(args)
    except Exception:
        return False
    return True

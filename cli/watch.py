"""`--watch`: poll the API at a bounded interval until the thing ends; Ctrl-C ends the watch (exit 130).
On a terminal one Rich view is redrawn in place; in a pipe or a log a line is printed at each change and
the full view once at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import RenderableType
from rich.live import Live

from cli.output import EXIT_INTERRUPTED, console, errors, fail

T = TypeVar("T")

Interval = Annotated[
    float,
    typer.Option("--interval", min=0.2, max=60.0, help="seconds between two polls of --watch"),
]


def watch(
    fetch: Callable[[], T],
    render: Callable[[T], RenderableType],
    summary: Callable[[T], str],
    ended: Callable[[T], bool],
    interval: float,
    quiet: bool = False,
) -> T:
    """Poll `fetch` every `interval` seconds until `ended`; the last state. `quiet` (under --json, whose
    stdout is the JSON alone): the change lines go to stderr and no view is printed."""
    state = fetch()
    try:
        if console.is_terminal and not quiet:
            with Live(render(state), console=console, refresh_per_second=4, transient=False) as live:
                while not ended(state):
                    time.sleep(interval)
                    state = fetch()
                    live.update(render(state))
            return state
        last: Any = None
        while True:
            line = summary(state)
            if line != last:
                (errors if quiet else console).print(line, markup=False, soft_wrap=True)
                last = line
            if ended(state):
                break
            time.sleep(interval)
            state = fetch()
        if not quiet:
            console.print(render(state))
        return state
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None

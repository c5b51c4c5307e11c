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

from cli.output import EXIT_INTERRUPTED, console, fail

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
    first: T | None = None,
) -> T:
    """Poll `fetch` every `interval` seconds until `ended`; the last state."""
    state = fetch() if first is None else first
    try:
        if console.is_terminal:
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
                console.print(line, markup=False)
                last = line
            if ended(state):
                break
            time.sleep(interval)
            state = fetch()
        console.print(render(state))
        return state
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None

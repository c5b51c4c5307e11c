"""CPU seconds per component of a stack over a window (Linux /proc): where a side's work goes.

A component is a set of processes named by their command line: the processes the bench started, their
descendants (run workers forked by the daemon, PostgreSQL's backends) and the bench's own process. Each
process counts its own time and its reaped children's (utime + stime + cutime + cstime); a process that
ended during the window moved its whole time into its parent's children's time, so its time at the
window's start is taken off again, leaving only what it spent inside the window.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import Engine, text

TICK = os.sysconf("SC_CLK_TCK")
Sample = dict[int, tuple[int, str, float]]  # pid -> (parent pid, command line, CPU seconds)


def _read(pid: int) -> tuple[int, str, float] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return int(fields[1]), cmdline.strip(), ticks / TICK


def sample(roots: Iterable[int]) -> Sample:
    """Every process under `roots` (and the roots), with its parent, command line and CPU seconds."""
    everything = {pid: got for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if (got := _read(pid))}
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in everything.items():
        children.setdefault(parent, []).append(pid)
    picked: Sample = {}
    stack = [pid for pid in roots if pid in everything]
    while stack:
        pid = stack.pop()
        if pid not in picked:
            picked[pid] = everything[pid]
            stack.extend(children.get(pid, []))
    return picked


def per_component(before: Sample, after: Sample, name: Callable[[str], str]) -> dict[str, float]:
    """CPU seconds spent between the two samples, per component (`name` of a command line)."""
    spent: dict[str, float] = {}
    for pid, (_, cmdline, seconds) in after.items():
        start = before[pid][2] if pid in before else 0.0
        part = name(cmdline)
        spent[part] = spent.get(part, 0.0) + seconds - start
    for pid, (_, cmdline, seconds) in before.items():
        if pid not in after:  # ended: its parent's children's time now holds all of it
            part = name(cmdline)
            spent[part] = spent.get(part, 0.0) - seconds
    return {component: round(seconds, 2) for component, seconds in sorted(spent.items()) if abs(seconds) >= 0.005}


def postmaster_pid(engine: Engine) -> int | None:
    """The local PostgreSQL server's pid: the parent of a backend of ours (None if it is not on this machine)."""
    with engine.connect() as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    got = _read(int(backend))
    return got[0] if got is not None else None

"""Processes, signals and probes for `make run`'s supervisor (scripts/supervise.py): a child dies with its
parent, a group is signalled and its live members listed, children are reaped, a stop signal sent to the
parent `make` alone is noticed (see supervise.py's docstring, point 3; Linux /proc, no-ops elsewhere), and
a service is probed on its port or URL."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux for `signum` when the parent process exits (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> set[int]:
    """Live (not zombie) processes of a process group."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(entry.name))
    return members


def reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _signal_masks(pid: int) -> dict[str, int]:
    masks = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("SigBlk", "SigCgt"):
                masks[key] = int(value.strip(), 16)
    except (OSError, ValueError):
        pass
    return masks


class ParentWatch:
    """Notices a stop signal sent to the parent `make` only (see the module's docstring, point 3)."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        try:
            is_make = Path(f"/proc/{self.parent}/comm").read_text().strip() == "make"
        except OSError:
            is_make = False
        # Only GNU make's handler is known to leave that trace; other parents forward signals or not.
        caught = _signal_masks(self.parent).get("SigCgt", 0) if is_make else 0
        self.watched = [s for s in STOP_SIGNALS if caught & _bit(s)]

    def signalled(self) -> str | None:
        if os.getppid() != self.parent:
            return "parent exited"
        masks = _signal_masks(self.parent)
        if not masks:
            return None
        for signum in self.watched:
            # In make's handler: the signal is blocked, and its disposition was reset to the default.
            if masks["SigBlk"] & _bit(signum) or not masks["SigCgt"] & _bit(signum):
                return f"{signal.Signals(signum).name} to the parent"
        return None


def _bit(signum: int) -> int:
    return 1 << (signum - 1)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return 200 <= status < 300
    except (OSError, urllib.error.URLError, http.client.HTTPException):  # e.g. another server on the port
        return False


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
        return answer

"""The drain's CPU per component (bench/cpu.py): a process that lived through the window counts what it
spent in it; one started in it counts all it spent; one that ended in it counts only its time inside the
window (its parent's children's time now holds all of it); and each command line has its component."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import cpu
from bench.phase_load import component

NAMES = {"postgres: backend": "postgresql", "fork": "run_workers", "daemon": "dagster_daemon"}


def test_cpu_per_component_takes_off_what_an_ended_process_had_spent_before_the_window():
    before = {
        1: (0, "daemon", 10.0),  # lives through
        2: (1, "fork", 5.0),  # the fork server: lives through, reaps the worker 3
        3: (2, "fork", 2.0),  # a run worker that ends in the window, having spent 2.5 s in all
        4: (0, "postgres: backend", 1.0),
    }
    after = {
        1: (0, "daemon", 10.5),
        2: (2, "fork", 5.0 + 0.25 + 2.5),  # its own 0.25 s and the reaped worker's whole 2.5 s
        4: (0, "postgres: backend", 1.5),
        5: (2, "fork", 0.75),  # a run worker started in the window
    }
    spent = cpu.per_component(before, after, lambda cmdline: NAMES[cmdline])
    assert spent == {"dagster_daemon": 0.5, "postgresql": 0.5, "run_workers": 0.25 + 0.5 + 0.75}


def test_a_sample_holds_the_roots_and_their_descendants_with_their_cpu():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        got = cpu.sample([os.getpid()])
        assert got[os.getpid()][2] > 0 and got[child.pid][0] == os.getpid()
        assert "sys.stdin.read()" in got[child.pid][1]
        assert cpu.sample([child.pid]).keys() == {child.pid}
    finally:
        child.kill()
        child.communicate()


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("postgres: postgres wrk 127.0.0.1(5432) idle", "postgresql"),
        ("/usr/lib/postgresql/15/bin/postgres -D /tmp/x/data -p 5432", "postgresql"),
        ("python -m uvicorn api.app:create_app --factory --port 1", "api"),
        ("python -B -c from multiprocessing.spawn import spawn_main", "api"),
        ("python -m uvicorn resources.sandbox.app:create_app --factory", "sandbox"),
        ("python -B -c from multiprocessing.forkserver import main; main(3, 5)", "run_workers"),
        ("python dagster-daemon run -w /tmp/wrk-bench-phases-1/workspace.yaml", "dagster_daemon"),
        ("python -m dagster api grpc -m orchestration_defs.definitions", "code_server"),
        ("node /work/bench/peers/bullmq/worker.js", "peer_worker"),
        ("node /work/bench/peers/bullmq/server.js", "peer_api"),
        ("redis-server 127.0.0.1:6379", "redis"),
        ("python -m bench.phases_vs_bullmq", "load_generator"),
        ("/usr/sbin/sshd -D", "other"),
    ],
)
def test_each_command_line_has_its_component(cmdline, expected):
    assert component(cmdline) == expected

"""`make run`'s supervisor (scripts/supervise.py) with stand-in services: a service that exits is
restarted with a growing backoff while the others keep running, and stopping leaves no process of any
service's group, including what a service started itself. Ordered by process states, never by time."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(10**6)"]
# A service that starts a child of its own, as the webserver starts code servers.
PARENT = [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '1000000']); time.sleep(10**6)"]


@pytest.fixture
def supervise():
    spec = importlib.util.spec_from_file_location("supervise", ROOT / "scripts" / "supervise.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["supervise"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def supervisor(supervise, tmp_path):
    env = {**os.environ, "LOG_DIR": str(tmp_path / "logs"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "logs").mkdir()
    sup = supervise.Supervisor(env)
    sup.parent.watched = []  # the test runner is not `make`
    yield sup
    sup.stop()


def _until(condition, step=None) -> None:
    while not condition():
        if step:
            step()
        time.sleep(0.05)


def test_a_killed_service_is_restarted_and_the_others_keep_running(supervise, supervisor, capsys):
    supervisor.add("steady", *SLEEPER)
    supervisor.add("parent", *PARENT)
    supervisor.add("flaky", *SLEEPER)
    for service in supervisor.services:
        supervisor.start(service)
    steady, parent, flaky = supervisor.services
    steady_pid, flaky_pid = steady.process.pid, flaky.process.pid
    _until(lambda: len(supervise.group_members(parent.process.pid)) == 2)  # its child is up
    os.kill(flaky_pid, signal.SIGKILL)
    _until(lambda: flaky.restarts == 1, supervisor.watch)
    assert flaky.process.pid != flaky_pid and flaky.process.poll() is None
    assert steady.process.pid == steady_pid and steady.process.poll() is None
    assert len(supervise.group_members(parent.process.pid)) == 2
    out = capsys.readouterr().out
    assert "flaky exited with code -9; restarting in 0.5 s" in out and "restarting flaky (restart 1)" in out

    groups = {pgid for s in supervisor.services for pgid in s.pgids}
    supervisor.stop()
    assert all(not supervise.group_members(pgid) for pgid in groups)  # the parent's child went too


def test_a_service_that_keeps_failing_backs_off_longer_each_time(supervisor, capsys):
    supervisor.add("broken", sys.executable, "-c", "raise SystemExit(3)")
    [broken] = supervisor.services
    supervisor.start(broken)
    _until(lambda: broken.restarts == 2 and broken.process.poll() is not None, supervisor.watch)
    supervisor.watch()
    out = capsys.readouterr().out
    delays = [line.split("restarting in ")[1] for line in out.splitlines() if "exited with code 3" in line]
    assert delays == [f"{d} s (see {broken.log_path})" for d in ("0.5", "1.0", "2.0")]


def test_the_parent_watch_sees_a_stop_signal_that_make_only_waits_on(supervise, tmp_path):
    """GNU make, given SIGHUP, only waits for its children: the supervisor must notice by itself."""
    makefile = tmp_path / "Makefile"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "import supervise\n"
        "watch = supervise.ParentWatch()\n"
        "print('watching', [s.name for s in watch.watched], flush=True)\n"
        "while not (reason := watch.signalled()):\n"
        "    time.sleep(0.05)\n"
        "print('stop:', reason, flush=True)\n"
    )
    makefile.write_text(f"probe:\n\t@exec {sys.executable} {probe}\n")
    out = tmp_path / "out"
    with open(out, "w") as sink:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-f", str(makefile)], stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )  # fmt: skip
        _until(lambda: "watching" in out.read_text())
        assert "SIGHUP" in out.read_text()
        make.send_signal(signal.SIGHUP)
        make.wait()
    assert "stop: SIGHUP to the parent" in out.read_text()


def test_api_workers_default_to_the_cores_and_refuse_nonsense(supervise, monkeypatch):
    monkeypatch.delenv("API_WORKERS", raising=False)
    assert supervise.environment()["API_WORKERS"] == str(len(os.sched_getaffinity(0)))
    monkeypatch.setenv("API_WORKERS", "3")
    assert supervise.environment()["API_WORKERS"] == "3"
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("API_WORKERS", bad)
        with pytest.raises(supervise.Misconfigured, match="API_WORKERS"):
            supervise.environment()


def test_the_batch_start_is_pinned_to_the_instances_first_day_unless_set(supervise, tmp_path, capsys):
    """A fresh instance starts its batch partitions today (in BATCH_TIMEZONE), not at the settings'
    default months back; the day is kept with the instance, so later starts do not move it."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    home = tmp_path / "dagster"
    home.mkdir()
    env = {"BATCH_TIMEZONE": "Pacific/Kiritimati"}
    supervise.pin_batch_start(env, home)
    assert env["BATCH_START"] == datetime.now(ZoneInfo("Pacific/Kiritimati")).date().isoformat()
    (home / "batch-start").write_text("2026-11-30\n")  # as if the instance had first started that day
    later: dict[str, str] = {}
    supervise.pin_batch_start(later, home)
    assert later["BATCH_START"] == "2026-11-30"
    chosen = {"BATCH_START": "2026-01-01"}
    supervise.pin_batch_start(chosen, home)
    assert chosen["BATCH_START"] == "2026-01-01"
    assert "batch partitions start at 2026-11-30" in capsys.readouterr().out


def test_a_dead_api_takes_its_workers_with_it_before_it_starts_again(supervise, supervisor):
    # The API's workers are children of its uvicorn process; left behind, they would hold the port.
    supervisor.add("api", *PARENT, stop_group_on_exit=True)
    [api] = supervisor.services
    supervisor.start(api)
    first = api.process.pid
    _until(lambda: len(supervise.group_members(first)) == 2)  # its worker is up
    os.kill(first, signal.SIGKILL)
    _until(lambda: api.restart_at is not None, supervisor.watch)
    _until(lambda: not supervise.group_members(first))  # the orphaned worker went with it
    _until(lambda: api.restarts == 1, supervisor.watch)
    assert api.process.pid != first and api.process.poll() is None


def test_a_log_over_its_limit_is_rotated_while_its_service_keeps_writing(supervise, tmp_path):
    path = tmp_path / "daemon.log"
    with open(path, "ab", buffering=0) as service:  # as a service holds its log: O_APPEND
        service.write(b"a" * 100)
        assert not supervise.rotate(path, max_bytes=100, keep=2)  # at the limit: kept
        service.write(b"b")
        assert supervise.rotate(path, max_bytes=100, keep=2)
        assert path.stat().st_size == 0 and (tmp_path / "daemon.log.1").read_bytes() == b"a" * 100 + b"b"
        service.write(b"after")  # the service's next line starts the emptied file
        assert path.read_bytes() == b"after"
        service.write(b"c" * 100)
        assert supervise.rotate(path, max_bytes=100, keep=2)
        service.write(b"x" * 101)
        assert supervise.rotate(path, max_bytes=100, keep=2)
    # keep=2: the two newest copies, the oldest gone
    assert (tmp_path / "daemon.log.1").read_bytes() == b"x" * 101
    assert (tmp_path / "daemon.log.2").read_bytes() == b"after" + b"c" * 100
    assert not (tmp_path / "daemon.log.3").exists()
    assert not supervise.rotate(tmp_path / "missing.log", max_bytes=1)


def test_the_api_gets_an_empty_metrics_folder_at_each_start_and_it_goes_at_the_stop(supervise, supervisor, tmp_path):
    # The API's workers sum their HTTP metrics through files there (PROMETHEUS_MULTIPROC_DIR): a restarted
    # API must not add to the dead one's files, and nothing is left behind.
    folder = tmp_path / "api-metrics"
    writer = "import os, time; open(os.path.join(os.environ['PROMETHEUS_MULTIPROC_DIR'], f'{os.getpid()}.db'), 'w'); "
    supervisor.add("api", sys.executable, "-c", writer + "time.sleep(10**6)", metrics_dir=folder)
    [api] = supervisor.services
    supervisor.start(api)
    first = api.process.pid
    _until(lambda: (folder / f"{first}.db").exists())
    os.kill(first, signal.SIGKILL)
    _until(lambda: api.restarts == 1, supervisor.watch)
    second = api.process.pid
    _until(lambda: (folder / f"{second}.db").exists())
    assert sorted(p.name for p in folder.iterdir()) == [f"{second}.db"]
    supervisor.stop()
    assert not folder.exists()


def test_a_service_that_refuses_its_configuration_is_not_restarted_and_stops_the_run(supervise, supervisor):
    line = "code location: configuration: BATCH_START='yesterday': expected an ISO 8601 date"
    supervisor.add("refuses", sys.executable, "-c", f"import sys; print({line!r}, file=sys.stderr); sys.exit(2)")
    [refuses] = supervisor.services
    supervisor.start(refuses)
    _until(lambda: refuses.process.poll() is not None)
    with pytest.raises(supervise.Misconfigured) as refused:
        supervisor.watch()
    assert str(refused.value) == "refuses refused its configuration: BATCH_START='yesterday': expected an ISO 8601 date"
    assert refuses.restarts == 0 and refuses.restart_at is None


def test_what_a_service_writes_is_logged_as_json_lines_without_colour(supervisor):
    script = (
        "import sys\n"
        "print('\\x1b[32m2026-12-07 06:37:36 +0000\\x1b[0m - dagster - \\x1b[34mINFO\\x1b[0m - job - "
        "7e9209e6-107e-4ead-861d-a76c30f79216 - started', flush=True)\n"
        'print(\'{"event": "Serving", "level": "info", "timestamp": "2026-12-07T06:00:00Z"}\', flush=True)\n'
        "print('Traceback (most recent call last):', file=sys.stderr, flush=True)\n"
    )
    supervisor.add("talker", sys.executable, "-c", script)
    [talker] = supervisor.services
    supervisor.start(talker)
    _until(lambda: talker.process.poll() is not None and len(talker.log_path.read_text().splitlines()) == 3)
    records = [json.loads(line) for line in talker.log_path.read_text().splitlines()]
    assert all(list(r)[:4] == ["time", "level", "service", "message"] for r in records)
    assert "\x1b" not in talker.log_path.read_text()
    by_message = {r["message"]: r for r in records}
    dagster = by_message["job - 7e9209e6-107e-4ead-861d-a76c30f79216 - started"]
    assert dagster["run_id"] == "7e9209e6-107e-4ead-861d-a76c30f79216" and dagster["level"] == "info"
    assert by_message["Serving"]["time"] == "2026-12-07T06:00:00Z"
    assert by_message["Traceback (most recent call last):"]["level"] == "warning"
    assert {r["service"] for r in records} == {"talker"}


def test_a_traceback_or_a_warning_with_its_source_line_is_one_record(supervisor):
    script = "import warnings\nwarnings.warn('careful')\nprint('between', flush=True)\n1 / 0\n"
    supervisor.add("crasher", sys.executable, "-c", script)
    [crasher] = supervisor.services
    supervisor.start(crasher)

    def records() -> list[dict]:
        if not crasher.log_path.exists():
            return []
        return [json.loads(line) for line in crasher.log_path.read_text().splitlines()]

    _until(lambda: crasher.process.poll() is not None and any("ZeroDivisionError" in r["message"] for r in records()))
    by_start = {r["message"].split("\n")[0]: r for r in records()}
    assert set(by_start) == {"<string>:2: UserWarning: careful", "between", "Traceback (most recent call last):"}
    traceback = by_start["Traceback (most recent call last):"]["message"]
    assert traceback.endswith("ZeroDivisionError: division by zero") and '  File "<string>", line 4' in traceback
    assert by_start["<string>:2: UserWarning: careful"]["level"] == "warning"

"""`make run`'s supervisor: prepare the store and the Dagster instance once, start the services, keep them up.

Why Python rather than bash: restarting one service with backoff while the others keep running, and
stopping every process on SIGINT, SIGTERM or SIGHUP wherever `make run` was started from, need a
process table, process groups and a parent-death signal; a loop over `wait -n` cannot do that reliably.

1. One process prepares everything before any service starts: the store's migrations, the demo seed
   (when the store is empty), and the Dagster instance, created and migrated by `dagster instance
   migrate` (also the step that upgrades its schema after a Dagster upgrade). The webserver, the daemon
   and their code servers then only open storage that exists; before, they raced to create it.
2. One code server (`dagster api grpc`, on DAGSTER_GRPC_PORT) loads the definitions once; the webserver
   and the daemon reach it through a generated workspace ($DAGSTER_HOME/workspace.yaml), so neither
   loads the code itself (a webserver restart takes half as long) and the runs it launches belong to it.
   Each service runs in its own process group (a session). A service that exits is restarted after a
   backoff (0.5 s doubling to 30 s, reset after a minute of uptime); the others keep running, and what
   the dead one started (runs in flight) is left to finish. Every restart is logged.
3. SIGINT, SIGTERM and SIGHUP stop every group: SIGTERM, then SIGKILL after STOP_GRACE_S. `make`
   forwards SIGTERM to its child but not SIGINT or SIGHUP; the supervisor asks the kernel for SIGTERM
   when its parent dies (PR_SET_PDEATHSIG). GNU make, given SIGINT or SIGHUP, only waits for its
   children; its handler blocks the signal while it waits, which /proc shows, so the supervisor watches
   its parent's blocked and caught signals and stops as if it had been signalled itself (ParentWatch).
   Each service gets a parent-death signal too, so a supervisor killed with SIGKILL still stops them.
4. Ready means: the API answers /health, the webserver answers, and the code location is LOADED
   (GraphQL `workspaceOrError`); a load error is printed as Dagster reports it, and `make run` exits 1.
5. Configuration: the settings are checked once, before anything starts; settings that cannot be used end
   `make run` with one line naming the setting, its masked value and what is expected, and exit status 2
   (EXIT_MISCONFIGURED). A service that exits with that status is not restarted: everything stops, with
   its line.
6. Logs: every line a service writes (stdout and stderr) is read here and written to LOG_DIR/<name>.log
   in the project's one field set (domain/core/logs.py): JSON lines by default, no colour codes, records
   below LOG_LEVEL left out. The supervisor's own lines go to LOG_DIR/supervisor.log as well.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cli.supervision import (
    STOP_SIGNALS,
    ParentWatch,
    die_with_parent,
    group_members,
    http_ok,
    port_open,
    post_json,
    reap_children,
    signal_group,
)
from domain.core import logs
from domain.core.settings import EXIT_MISCONFIGURED, ConfigurationError, load_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
LOCATION = "wrk_orchestration"
READY_TIMEOUT_S = float(os.environ.get("RUN_READY_TIMEOUT_S", "300"))
STOP_GRACE_S = 8.0
BACKOFF_FIRST_S, BACKOFF_MAX_S, STABLE_AFTER_S = 0.5, 30.0, 60.0
# A service's log beyond LOG_MAX_MB is rotated (<name>.log.1 .. .LOG_KEEP), looked at every LOG_CHECK_S;
# LOG_MAX_MB=0: never.
LOG_MAX_BYTES = int(float(os.environ.get("LOG_MAX_MB", "50")) * 1024 * 1024)
LOG_KEEP, LOG_CHECK_S = 3, 30.0
# How long a plain-text log line waits for a continuation (the next line of a traceback) before it is written.
FOLD_WAIT_S = 0.2


log = logging.getLogger("supervisor")


def say(message: str) -> None:
    print(f"run: {message}", flush=True)
    log.info(message)


class Misconfigured(Exception):
    """Settings `make run` or one of its services cannot start with (one line)."""


def rotate(path: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
    """Rotate `path` once it is larger than `max_bytes`, as logrotate's copytruncate does: the service
    keeps its file open (O_APPEND), so the file is copied to `<name>.1` (older copies shift up to
    `<name>.<keep>`) and emptied; the service's next line starts it again. Lines written between the copy
    and the truncation are lost (a few, at most)."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def api_workers(value: str | None) -> int:
    """API_WORKERS: the API's worker processes (uvicorn --workers); by default one per core this process
    may run on. The API's Python is bound by one core per process (the GIL); several processes use all."""
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise Misconfigured(f"API_WORKERS={value!r}: expected a whole number of at least 1")
    return workers


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(ROOT / "var" / "dagster"))
    # The store: the same file `wrk-orch` finds by default when run from the project folder.
    env.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'wrk.db'}")
    env.setdefault("DAGSTER_PORT", "3000")
    env.setdefault("API_PORT", "8000")
    env.setdefault("SANDBOX_PORT", "8900")
    env["API_WORKERS"] = str(api_workers(env.get("API_WORKERS")))
    env.setdefault("DAGSTER_GRPC_PORT", str(int(env["DAGSTER_PORT"]) + 1))
    # The sandbox's SMTP sink listens on SMTP_PORT: derived from SANDBOX_PORT so a second stack with
    # other ports does not collide on it.
    env.setdefault("SMTP_PORT", str(int(env["SANDBOX_PORT"]) + 25))
    env.setdefault("SMTP_HOST", "127.0.0.1")
    env.setdefault("WRK_API_URL", f"http://127.0.0.1:{env['SANDBOX_PORT']}")
    env.setdefault("GITHUB_API_URL", f"http://127.0.0.1:{env['SANDBOX_PORT']}/github")
    # Not under $DAGSTER_HOME/logs: Dagster owns that folder and clears it.
    env.setdefault("LOG_DIR", str(ROOT / "var" / "logs"))
    # The venv first: dagster-celery's worker command starts `celery` from the PATH.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def pin_batch_start(env: dict[str, str], home: Path) -> None:
    """BATCH_START, when not set, is the day this Dagster instance first started (in BATCH_TIMEZONE), kept
    in $DAGSTER_HOME/batch-start: a fresh instance's catalog shows today's periods, not every period since
    the settings' default; and the start never moves for that instance (a start that moved with each start
    would change the assets' partitions under their history and the runs in flight)."""
    if env.get("BATCH_START"):
        return
    pinned = home / "batch-start"
    if not pinned.exists():
        try:
            zone = ZoneInfo(env.get("BATCH_TIMEZONE") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return  # the code location refuses the zone itself, naming BATCH_TIMEZONE
        pinned.write_text(datetime.now(zone).date().isoformat() + "\n")
    env["BATCH_START"] = pinned.read_text().strip()
    say(f"batch partitions start at {env['BATCH_START']} ({pinned}; BATCH_START overrides)")


def celery_workers(env: dict[str, str]) -> int:
    """How many local Celery workers to start: CELERY_WORKERS (default 2) when EXECUTOR=celery, else none.
    A broker is required; `make run` starts none of its own (see docs/kubernetes-and-celery.md)."""
    if env.get("EXECUTOR", "multiprocess").lower() != "celery":
        return 0
    if not (env.get("CELERY_BROKER_URL") or env.get("RABBITMQ_URL")):
        raise Misconfigured(
            "EXECUTOR=celery needs a broker: set CELERY_BROKER_URL (or RABBITMQ_URL), or start a throwaway "
            "one with the run: scripts/with-rabbitmq sh -c 'CELERY_BROKER_URL=$TEST_RABBITMQ_URL make run'"
        )
    try:
        workers = int(env.get("CELERY_WORKERS") or "2")
    except ValueError:
        workers = -1
    if workers < 0:
        raise Misconfigured(f"CELERY_WORKERS={env.get('CELERY_WORKERS')!r}: expected a whole number")
    return workers


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    pgids: set[int] = field(default_factory=set)
    # Dagster's gRPC code server does not exit on SIGTERM; it is stateless, so it is killed once the
    # runs in its group have stopped.
    deaf_to_term: bool = False
    # The API with several workers: its workers are children of the uvicorn process and would outlive it
    # (still holding the port) if it died; its group is stopped before it starts again.
    stop_group_on_exit: bool = False
    # The API's workers sum their HTTP metrics through files in one folder (prometheus_client's
    # multiprocess mode, PROMETHEUS_MULTIPROC_DIR): emptied before each start, so a restarted API starts
    # its counters from zero (a reset Prometheus sees) rather than adding to a dead worker's gauges.
    metrics_dir: Path | None = None
    # Its log file, written by the relay threads (a lock of its own: two streams write it).
    handler: logging.Handler | None = None
    last_line: str = ""


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.log_dir = Path(env["LOG_DIR"])
        self.services: list[Service] = []
        self.stopping = False
        self.logs_checked_at = time.monotonic()
        self.parent = ParentWatch()
        self.workspace = Path(env["DAGSTER_HOME"]) / "workspace.yaml"
        self.log_level = logging.getLevelName(env.get("LOG_LEVEL", "INFO").upper())
        self.log_format: logs.LogFormat = "text" if env.get("LOG_FORMAT", "json").lower() == "text" else "json"

    # -- preparation: one process, before any service -------------------------------------------------

    def prepare(self) -> None:
        home = Path(self.env["DAGSTER_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        pin_batch_start(self.env, home)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / self.env.get("DAGSTER_INSTANCE_YAML", "dagster.yaml"), home / "dagster.yaml")
        # Dagster's instance and the store are independent: the instance is migrated beside the store's
        # two steps, so the slowest of them sets the preparation's length.
        instance = self.begin("Dagster instance", [str(BIN / "dagster"), "instance", "migrate"])
        self.check("store migrations", [str(BIN / "wrk-orch"), "migrate"])
        seed = self.check("demo seed", [str(BIN / "wrk-orch"), "seed-demo", "--if-empty"])
        (self.log_dir / "seed-demo.json").write_text(seed)
        self.finish(*instance)
        self.workspace.write_text(
            "# Written by scripts/supervise.py: the webserver and the daemon use the one code server.\n"
            "load_from:\n"
            "  - grpc_server:\n"
            "      host: 127.0.0.1\n"
            f"      port: {self.env['DAGSTER_GRPC_PORT']}\n"
            f"      location_name: {LOCATION}\n"
        )
        for service in self.services:
            if service.name.startswith("celery-worker-"):
                # Its command and config from the code (orchestration_defs/executors.py); this script
                # imports no Dagster (only domain.core's settings and logs).
                config = home / "celery-worker.yaml"
                argv = [str(BIN / "python"), "-m", "orchestration_defs.executors", str(config), service.name]
                service.argv = json.loads(self.check("Celery worker config", argv))
        say(f"store and Dagster instance ready (DAGSTER_HOME={home})")

    def check(self, what: str, argv: list[str]) -> str:
        return self.finish(*self.begin(what, argv))

    def begin(self, what: str, argv: list[str]) -> tuple[str, list[str], subprocess.Popen[str]]:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return what, argv, process

    def finish(self, what: str, argv: list[str], process: subprocess.Popen[str]) -> str:
        stdout, stderr = process.communicate()
        if process.returncode == EXIT_MISCONFIGURED:
            raise Misconfigured(last_line(stderr or stdout).split("configuration: ", 1)[-1])
        if process.returncode != 0:
            say(f"{what} failed ({' '.join(argv[-2:])}, exit {process.returncode}):")
            sys.stderr.write(stderr or stdout)
            raise SystemExit(1)
        return stdout

    # -- services --------------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        *argv: str,
        deaf_to_term: bool = False,
        stop_group_on_exit: bool = False,
        metrics_dir: Path | None = None,
    ) -> None:
        service = Service(
            name,
            list(argv),
            self.log_dir / f"{name}.log",
            deaf_to_term=deaf_to_term,
            stop_group_on_exit=stop_group_on_exit,
            metrics_dir=metrics_dir,
        )
        # delay: the file is made by the first line (the log folder is made by prepare()).
        service.handler = logging.FileHandler(service.log_path, encoding="utf-8", delay=True)
        service.handler.setFormatter(logs.formatter(name, self.log_format))
        self.services.append(service)

    def start(self, service: Service) -> None:
        env = self.env
        if service.metrics_dir is not None:
            shutil.rmtree(service.metrics_dir, ignore_errors=True)
            service.metrics_dir.mkdir(parents=True)
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(service.metrics_dir)}
        service.process = subprocess.Popen(
            service.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stopping it stops its children
            # A supervisor killed with SIGKILL still stops it (SIGKILL for one deaf to SIGTERM).
            preexec_fn=functools.partial(die_with_parent, signal.SIGKILL if service.deaf_to_term else signal.SIGTERM),
        )
        # Plain text on stderr (a traceback, a warning) is a warning; on stdout, information.
        for stream, level in ((service.process.stdout, "info"), (service.process.stderr, "warning")):
            threading.Thread(target=self.relay, args=(service, stream, level), daemon=True).start()
        service.pgids.add(service.process.pid)
        service.started_at = time.monotonic()
        service.restart_at = None
        say(f"started {service.name} (pid {service.process.pid}, log {service.log_path})")

    def relay(self, service: Service, stream: IO[bytes], level: str) -> None:
        """Write each line of a service's `stream` to its log in the field set, until the stream ends (every
        process of its group that holds it has exited). Plain text that continues a record (a traceback up to
        its exception's line, a warning's indented source line) is folded into it: one record per failure.
        A record waits at most FOLD_WAIT_S for its continuation."""
        fd, rest, pending = stream.fileno(), b"", []

        def write(text: str) -> None:
            assert service.handler is not None
            record = logs.relayed_record(service.name, text, level)
            service.last_line = record.getMessage()
            if record.levelno >= self.log_level:
                service.handler.handle(record)

        def flush() -> None:
            if pending:
                write("\n".join(pending))
                pending.clear()

        with stream:
            while True:
                if pending and not select.select([fd], [], [], FOLD_WAIT_S)[0]:
                    flush()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *lines, rest = (rest + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r")
                    in_traceback = bool(pending) and pending[0].startswith("Traceback (most recent call last):")
                    if pending and (line[:1] in (" ", "\t") or in_traceback):
                        pending.append(line)
                        if in_traceback and line[:1] not in (" ", "\t"):
                            flush()  # the exception's own line ends its traceback
                        continue
                    flush()
                    if line.lstrip().startswith("{"):
                        write(line)  # a JSON record stands alone
                    else:
                        pending.append(line)
            if rest:
                pending.append(rest.decode("utf-8", errors="replace"))
            flush()

    def watch(self) -> None:
        """Restart any service that exited, after its backoff; the others are not touched."""
        reason = self.parent.signalled()
        if reason and not self.stopping:
            self.stopping = True
            raise Stop(reason)
        now = time.monotonic()
        if LOG_MAX_BYTES > 0 and now >= self.logs_checked_at + LOG_CHECK_S:
            self.logs_checked_at = now
            for path in [self.log_dir / "supervisor.log", *(service.log_path for service in self.services)]:
                if rotate(path):
                    say(f"rotated {path} (over {LOG_MAX_BYTES // (1024 * 1024)} MB)")
        for service in self.services:
            process = service.process
            if service.restart_at is not None:
                if now >= service.restart_at and not self.stopping:
                    service.restarts += 1
                    say(f"restarting {service.name} (restart {service.restarts})")
                    self.start(service)
                continue
            if process is None or process.poll() is None:
                continue
            if process.returncode == EXIT_MISCONFIGURED:
                # Starting it again would fail the same way: stop everything, with its reason.
                raise Misconfigured(f"{service.name} refused its configuration: {self.reason(service)}")
            if now - service.started_at > STABLE_AFTER_S:
                service.backoff_s = BACKOFF_FIRST_S
            if service.stop_group_on_exit:
                signal_group(process.pid, signal.SIGKILL)
            say(
                f"{service.name} exited with code {process.returncode}; restarting in {service.backoff_s:.1f} s "
                f"(see {service.log_path})"
            )
            service.restart_at = now + service.backoff_s
            service.backoff_s = min(BACKOFF_MAX_S, service.backoff_s * 2)

    def reason(self, service: Service) -> str:
        """The configuration line of a service that exited with EXIT_MISCONFIGURED (its last line)."""
        deadline = time.monotonic() + 5  # the relay may still be reading the line
        while "configuration: " not in service.last_line and time.monotonic() < deadline:
            time.sleep(0.05)
        return service.last_line.split("configuration: ", 1)[-1]

    def stop(self) -> None:
        self.stopping = True
        say("stopping")
        groups = {pgid for service in self.services for pgid in service.pgids}
        deaf = {s.process.pid for s in self.services if s.deaf_to_term and s.process is not None}
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)  # run workers in a group record their interruption
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(group_members(pgid) - deaf for pgid in groups):
            reap_children()
            time.sleep(0.1)
        for pgid in groups:
            if group_members(pgid) - deaf:
                say(f"process group {pgid} still running after {STOP_GRACE_S:.0f} s; killing it")
            signal_group(pgid, signal.SIGKILL)
        reap_children()
        for service in self.services:
            if service.metrics_dir is not None:
                shutil.rmtree(service.metrics_dir, ignore_errors=True)
        say("stopped")

    # -- readiness -------------------------------------------------------------------------------------

    def wait_code_server(self) -> None:
        port = int(self.env["DAGSTER_GRPC_PORT"])
        [code_server] = [s for s in self.services if s.name == "dagster-code-server"]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not port_open(port):
            self.watch()
            if code_server.restarts >= 2 or time.monotonic() > deadline:
                say(f"the code server does not start; the end of {code_server.log_path}:")
                sys.stderr.write(tail(code_server.log_path))
                raise SystemExit(1)
            time.sleep(0.2)

    def wait_ready(self) -> bool:
        api = f"http://127.0.0.1:{self.env['API_PORT']}"
        dagster = f"http://127.0.0.1:{self.env['DAGSTER_PORT']}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting_for = "the API and the Dagster webserver"
        while time.monotonic() < deadline and not self.stopping:
            self.watch()
            if http_ok(f"{api}/health") and http_ok(f"{dagster}/server_info"):
                status, error = location_status(dagster)
                if status == "LOADED":
                    say(f"code location {LOCATION} loaded")
                    return True
                if error:
                    say(f"code location {LOCATION} failed to load:\n{error}")
                    return False
                waiting_for = f"code location {LOCATION} ({status or 'not listed yet'})"
            time.sleep(0.5)
        if not self.stopping:
            say(f"not ready after {READY_TIMEOUT_S:.0f} s: still waiting for {waiting_for}; see {self.log_dir}/")
        return False


WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } } } }
    ... on PythonError { message } } }
"""


def location_status(dagster_url: str) -> tuple[str | None, str | None]:
    """(load status, error text) of our code location, from the webserver's GraphQL API."""
    try:
        answer = post_json(f"{dagster_url}/graphql", {"query": WORKSPACE_QUERY})
    except (OSError, ValueError):
        return None, None
    workspace = (answer.get("data") or {}).get("workspaceOrError") or {}
    if workspace.get("__typename") == "PythonError":
        return None, workspace.get("message")
    for entry in workspace.get("locationEntries") or []:
        if entry.get("name") != LOCATION:
            continue
        loaded = entry.get("locationOrLoadError") or {}
        if loaded.get("__typename") == "PythonError":
            return "ERROR", loaded.get("message", "") + "".join(loaded.get("stack") or [])
        return entry.get("loadStatus"), None
    return None, None


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    except OSError:
        return ""


class Stop(Exception):
    pass


def steps_where(supervisor: Supervisor) -> str:
    workers = [s.name for s in supervisor.services if s.name.startswith("celery-worker-")]
    if supervisor.env.get("EXECUTOR", "").lower() == "celery":
        return f"on Celery ({len(workers)} local worker(s): queues releases, workflows, phases)"
    return "on this machine (EXECUTOR=multiprocess)"


def checked_environment() -> dict[str, str]:
    """`make run`'s environment, its settings checked once before anything starts (Misconfigured)."""
    env = environment()
    celery_workers(env)
    os.environ.update(env)  # the settings are read from this process's environment
    try:
        load_settings()
    except ConfigurationError as exc:
        raise Misconfigured(str(exc)) from None
    return env


def log_to_file(env: dict[str, str]) -> None:
    """The supervisor's own lines (say()) also go to LOG_DIR/supervisor.log, in the services' field set."""
    log_dir = Path(env["LOG_DIR"])
    log_dir.mkdir(parents=True, exist_ok=True)
    stream = open(log_dir / "supervisor.log", "a", encoding="utf-8")  # noqa: SIM115 - the process's lifetime
    log_format: logs.LogFormat = "text" if env.get("LOG_FORMAT", "json").lower() == "text" else "json"
    logs.configure("supervisor", env.get("LOG_LEVEL", "INFO"), log_format, stream)


def main() -> int:
    die_with_parent()
    try:
        env = checked_environment()
    except Misconfigured as exc:
        print(f"run: configuration: {exc}", file=sys.stderr, flush=True)
        return EXIT_MISCONFIGURED
    log_to_file(env)
    supervisor = Supervisor(env)

    def on_signal(signum: int, _frame: Any) -> None:
        if not supervisor.stopping:
            supervisor.stopping = True
            raise Stop(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)

    uvicorn = str(BIN / "uvicorn")
    host = "127.0.0.1"
    if (ROOT / "resources" / "sandbox").is_dir():
        supervisor.add(
            "sandbox", uvicorn, "resources.sandbox.app:create_app", "--factory",
            "--host", host, "--port", env["SANDBOX_PORT"], "--no-access-log",
        )  # fmt: skip
    supervisor.add(
        "api", uvicorn, "api.app:create_app", "--factory", "--host", host, "--port", env["API_PORT"], "--no-access-log",
        "--workers", env["API_WORKERS"], stop_group_on_exit=True,
        metrics_dir=Path(tempfile.gettempdir()) / f"wrk-api-metrics-{os.getpid()}",
    )  # fmt: skip
    # Dagster's processes log JSON (the relay names its fields as ours) at LOG_LEVEL.
    level = env.get("LOG_LEVEL", "INFO").lower()
    dagster_logs = ["--log-format", "json", "--log-level", level]
    supervisor.add(
        "dagster-code-server", str(BIN / "dagster"), "api", "grpc", "-m", "orchestration_defs.definitions",
        "-a", "defs", "--location-name", LOCATION, "-h", host, "-p", env["DAGSTER_GRPC_PORT"], *dagster_logs,
        deaf_to_term=True,
    )  # fmt: skip
    workspace = str(supervisor.workspace)
    webserver = [str(BIN / "dagster-webserver"), "-w", workspace, "-h", host, "-p", env["DAGSTER_PORT"]]
    supervisor.add("dagster-webserver", *webserver, "--log-format", "json", "--dagster-log-level", level)
    supervisor.add("dagster-daemon", str(BIN / "dagster-daemon"), "run", "-w", workspace, *dagster_logs)
    # EXECUTOR=celery: N workers, each its own process group as it would be on its own machine; the
    # command is filled in by prepare(). A worker stopped mid-step leaves the step to the broker, which
    # gives it to another worker (acks late).
    for number in range(1, celery_workers(env) + 1):
        supervisor.add(f"celery-worker-{number}")

    code = 0
    try:
        supervisor.prepare()
        for service in supervisor.services:
            if service.name in ("dagster-webserver", "dagster-daemon"):
                supervisor.wait_code_server()  # else both would start with the location unreachable
            supervisor.start(service)
        if not supervisor.wait_ready():
            code = 1
        else:
            print(
                f"run: ready\n"
                f"  Dagster UI   http://127.0.0.1:{env['DAGSTER_PORT']}\n"
                f"  API          http://127.0.0.1:{env['API_PORT']}/health   (openapi: /openapi.json)\n"
                f"  Sandbox      http://127.0.0.1:{env['SANDBOX_PORT']}   (SMTP sink on port {env['SMTP_PORT']})\n"
                f"  Steps        {steps_where(supervisor)}\n"
                f"  Demo data    {supervisor.log_dir}/seed-demo.json\n"
                f"  Logs         {supervisor.log_dir}/\n"
                f"A service that exits is restarted. Ctrl-C (or SIGTERM, SIGHUP) stops everything.",
                flush=True,
            )
            while True:
                supervisor.watch()
                time.sleep(0.2)
    except Stop as stop:
        say(f"{stop} received")
    except Misconfigured as exc:
        print(f"run: configuration: {exc}", file=sys.stderr, flush=True)
        log.error(f"configuration: {exc}")
        code = EXIT_MISCONFIGURED
    finally:
        # No second signal may interrupt the shutdown itself.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        supervisor.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Real servers on loopback for tests and benchmarks: a uvicorn in a thread or in its own process, and
the Dagster webserver and daemon as processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        # No deadline: it either starts or its thread ends (a port taken, an app that fails to build).
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Sandbox:
    """The sandbox over real HTTP, with helpers for its control endpoints."""

    def __init__(self, url: str, smtp_port: int) -> None:
        self.url = url
        self.github_url = url + "/github"
        self.smtp_port = smtp_port
        self.http = httpx.Client(base_url=url, timeout=60)

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def fault(self, method: str, path: str, **spec: Any) -> None:
        self.http.post("/_sandbox/faults", json={"method": method, "path": path, **spec}).raise_for_status()

    def calls(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"method": method, "path": path}.items() if v}
        return self._list(self.http.get("/_sandbox/calls", params=params))

    def mail(self) -> list[dict[str, Any]]:
        return self._list(self.http.get("/_sandbox/mail"))

    def slack(self) -> list[dict[str, Any]]:
        return self._list(self.http.get("/_sandbox/slack"))

    @staticmethod
    def _list(response: httpx.Response) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = response.json()
        return found

    def configure_github(self, **config: Any) -> None:
        self.http.post("/_sandbox/github/config", json=config).raise_for_status()


def until(predicate: Callable[[], Any], why: Any, timeout: float = 900.0, interval: float = 0.2) -> Any:
    """Poll until `predicate()` is truthy and return it. The timeout only stops a broken system from
    hanging the suite; no speed is asserted. `why` (or its result, when callable) explains a give-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up waiting: {why() if callable(why) else why}")


def wait_for(url: str, timeout: float = 600, why: Any = "", process: subprocess.Popen[Any] | None = None) -> None:
    """Until `url` answers (any status below 500: the server is up and routing); when the server's
    `process` is given, an exit of it ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            detail = why() if callable(why) else why
            raise RuntimeError(f"{url}: its server exited with {process.returncode} {detail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout:.0f} s {why() if callable(why) else why}")
        time.sleep(0.2)


def dagster_home(home: Path) -> None:
    """Make `home` a Dagster instance directory for a daemon under test: `make run`'s dagster.yaml, its
    storage created once."""
    import yaml
    from dagster import DagsterInstance  # here: the API's tests and the benches need no Dagster

    home.mkdir(parents=True, exist_ok=True)
    instance_config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # Run monitoring fails a run whose worker has not started within start_timeout_seconds. On a busy CI
    # machine (load 28 on 2 cores was seen) a start took longer than make run's bound and the run was
    # failed for it; the tests are not about monitoring, so they give a start all the time it needs.
    instance_config["run_monitoring"]["start_timeout_seconds"] = 600
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    # Create the instance's storage once, before the webserver and the daemon open it: started
    # together on an empty DAGSTER_HOME they race to create the SQLite schedule storage, and the loser
    # finds two Alembic heads (a CI run failed so). `make run` does the same (scripts/supervise.py).
    with DagsterInstance.from_config(str(home)):
        pass


def sandbox_env(sandbox_url: str) -> dict[str, str]:
    """The settings pointing the WRK Platform client and the workflow steps' six services at a sandbox."""
    from domain.workflows.workflow_definitions import SERVICES

    return {"WRK_API_URL": sandbox_url} | {f"SERVICE_{s.upper()}_URL": f"{sandbox_url}/services/{s}" for s in SERVICES}


WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name loadStatus locationOrLoadError { __typename } } } } }
"""


def wait_for_code_location(webserver_url: str, timeout: float = 600, why: Any = "") -> None:
    """Until the webserver serves a loaded code location: it answers `/server_info` before its code server
    has loaded the definitions, and a launch in between finds no job."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.post(f"{webserver_url}/graphql", json={"query": WORKSPACE}, timeout=5).json()
            entries = answer["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(
                e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries
            ):
                return
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
        if time.monotonic() > deadline:
            detail = why() if callable(why) else why
            raise RuntimeError(f"{webserver_url}: no loaded code location in {timeout:.0f} s {detail}")
        time.sleep(0.2)


class Processes:
    """Processes of the project (uvicorn apps, dagster-webserver, dagster-daemon), stopped together."""

    def __init__(self, env: Mapping[str, str] | None = None, log: IO[Any] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.out: Any = log if log is not None else subprocess.DEVNULL
        self.procs: list[subprocess.Popen[Any]] = []
        self.deaf: list[subprocess.Popen[Any]] = []
        self.groups: list[int] = []  # process groups whose leftovers stop() kills
        self.folders: list[str] = []

    def spawn(self, *args: str, env: Mapping[str, str] | None = None, group: bool = False) -> subprocess.Popen[Any]:
        """A process; with `group`, in a process group of its own whose every member stop() ends (the run
        workers a daemon forks outlive it, as they outlive a daemon's restart: wrk_instance/launcher.py)."""
        proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=self.out,
            stderr=self.out,
            start_new_session=group,
        )
        self.procs.append(proc)
        if group:
            self.groups.append(proc.pid)
        return proc

    def uvicorn(self, factory: str, env: Mapping[str, str] | None = None, workers: int = 1) -> str:
        """Serve an app factory in its own process (no shared GIL with the caller), or in `workers`
        worker processes sharing the port as `make run` serves the API, with an empty folder of their own
        for the metrics they sum (PROMETHEUS_MULTIPROC_DIR, removed at stop); returns its URL."""
        port = free_port()
        metrics_dir = tempfile.mkdtemp(prefix="wrk-api-metrics-")
        self.folders.append(metrics_dir)
        proc = self.spawn(
            sys.executable,
            "-m",
            "uvicorn",
            factory,
            "--factory",
            "--port",
            str(port),
            *(["--workers", str(workers)] if workers > 1 else []),
            "--no-access-log",
            "--log-level",
            "warning",
            env={**(env or {}), "PROMETHEUS_MULTIPROC_DIR": metrics_dir},
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/", process=proc)
        return url

    def dagster_code_server(self, home: Path) -> str:
        """The one code server the webserver and the daemon share, as `make run` starts it
        (scripts/supervise.py); returns the workspace file that points them to it."""
        port = free_port()
        proc = self.spawn(
            str(BIN / "dagster"), "api", "grpc", "-m", "orchestration_defs.definitions", "-a", "defs",
            "--location-name", "wrk_orchestration", "-h", "127.0.0.1", "-p", str(port),
        )  # fmt: skip
        self.deaf.append(proc)  # it does not exit on SIGTERM; stateless, it is killed (supervise.py does too)
        workspace = home / "workspace.yaml"
        workspace.write_text(
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n"
            "      location_name: wrk_orchestration\n"
        )
        while True:  # no deadline: it either listens or exits
            if proc.poll() is not None:
                raise RuntimeError(f"the code server exited with {proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return str(workspace)
            time.sleep(0.1)

    def dagster_webserver(self, port: int, workspace: str = "workspace.yaml") -> None:
        self.spawn(str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port))

    def dagster_daemon(self, workspace: str = "workspace.yaml") -> None:
        self.spawn(str(BIN / "dagster-daemon"), "run", "-w", workspace, group=True)

    def stop(self) -> None:
        for proc in self.procs:
            if proc in self.deaf:
                continue
            proc.terminate()
        for proc in self.procs:
            if proc in self.deaf:
                continue
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.deaf:  # after the daemon and the webserver, which talk to it while stopping
            proc.kill()
            proc.wait()
        for pgid in self.groups:  # what the daemon left: its fork server and the run workers still running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)

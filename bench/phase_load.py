"""The phase benches' stack and load (bench/phases.py, bench/phases_vs_bullmq.py): the sandbox, the API
under uvicorn and the Dagster daemon on one throwaway PostgreSQL database; phase-1 POSTs by concurrent
clients; waiting for triggers to finish; a user's live stream read while triggers are posted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import Engine, text

from bench import cpu
from bench.common import api_workers, drive
from domain.core.models import Tenant
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.core.tokens import mint_dev_token

ROOT = Path(__file__).resolve().parents[1]
SELLER = "bench-seller"
DRAIN_LIMIT_S = float(os.environ.get("BENCH_PHASE_DRAIN_LIMIT_S", "900"))  # a stalled pipeline ends the bench


class Stack:
    """Sandbox, API and Dagster daemon as processes on one throwaway PostgreSQL database. With `api=False`
    only the sandbox, the tenant and the token: another API (a peer's) is started on `processes`, its URL
    put in `api`."""

    def __init__(self, engine: Engine, api: bool = True) -> None:
        from tests.servers import Processes, free_port

        self.engine = engine
        url = engine.url.render_as_string(hide_password=False)
        home = Path(tempfile.mkdtemp(prefix="wrk-bench-phases-"))
        (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
        self.log_path = home / "stack.log"
        self.log = self.log_path.open("w")
        api_port, sandbox_port = free_port(), free_port()
        env = {
            "DAGSTER_HOME": str(home),
            "DATABASE_URL": url,
            "ENVIRONMENT": "development",
            "API_PORT": str(api_port),
            "SANDBOX_PORT": str(sandbox_port),
            "SMTP_PORT": str(free_port()),
            "PROOF_PACKET_DIR": str(home / "proof-packets"),
        }
        self.processes = Processes(env, self.log)
        self.sandbox = f"http://127.0.0.1:{sandbox_port}"
        self.api = f"http://127.0.0.1:{api_port}"
        self.home = home
        python = sys.executable
        sandbox = self.processes.spawn(
            python, "-m", "uvicorn", "resources.sandbox.app:create_app", "--factory", "--port", str(sandbox_port),
            "--no-access-log", "--log-level", "warning",
        )  # fmt: skip
        self.wait_up(self.sandbox + "/", sandbox)
        if api:
            server = self.processes.spawn(
                python, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(api_port),
                "--workers", str(api_workers()), "--no-access-log", "--log-level", "warning",
            )  # fmt: skip
            self.wait_up(self.api + "/health", server)
        # The chain's call backs off: the figures are about the triggers posted here.
        answer = httpx.post(
            f"{self.sandbox}/_sandbox/integrations/config", json={"callbacks_enabled": False}, timeout=30
        )
        answer.raise_for_status()
        with transaction(engine) as session:
            self.tenant_id = str(uuid.uuid4())
            session.add(Tenant(id=self.tenant_id, name=f"bench-{self.tenant_id[:8]}"))
        self.token = mint_dev_token(
            Settings(environment="development"),
            tenants=[self.tenant_id],
            roles=["service"],
            sub="bench",
            ttl_seconds=7200,
        )

    def start_daemon(self) -> None:
        # One code server the daemon reaches, as `make run` has (a daemon left to spawn its own would start
        # a new one every minute: Dagster's workspace refresh for a code location it manages).
        self.processes.dagster_daemon(self.processes.dagster_code_server(self.home))

    def wait_up(self, url: str, process: subprocess.Popen[Any]) -> None:
        """Until `url` answers; a process that exits first ends the bench at once, with its log."""
        while True:
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{url}: the process exited ({process.returncode}): {self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        self.processes.stop()
        self.log.close()


def post_all(
    stack: Stack, prefix: str, count: int, clients: int, reference: str | None = None
) -> tuple[list[int], list[float]]:
    """`count` phase-1 POSTs by `clients` concurrent clients; the trigger ids and each POST's seconds.
    With `reference` (a plain Starlette app's URL), the same POSTs to its one route instead."""
    url, path = (reference, "/ping") if reference else (stack.api, "/api/v1/workflow/phase/1")
    work = [
        [
            ("POST", path, {"json": {"user_id": f"{prefix}-u{n}", "sync_id": f"{prefix}-s{n}", "seller_id": SELLER}})
            for n in range(first, count, clients)
        ]
        for first in range(min(clients, count))
    ]
    driven = drive(url, work, headers={"Authorization": f"Bearer {stack.token}"})
    for _, status, answer in driven.answers:
        if status not in (200, 202):
            raise RuntimeError(f"POST {path}: {status} {answer[:300]}")
    ids = [] if reference else [int(json.loads(answer)["trigger_id"]) for _, _, answer in driven.answers]
    return ids, driven.latencies


def wait_finished(engine: Engine, ids: Sequence[int], limit_s: float = DRAIN_LIMIT_S) -> dict[str, Any]:
    """Until every trigger of `ids` is finished (done or dead) or `limit_s` passes; then their figures,
    from the rows' own timestamps."""
    deadline = time.monotonic() + limit_s
    params = {"ids": list(ids)}
    while True:
        with engine.connect() as conn:
            unfinished = conn.execute(
                text("SELECT count(*) FROM trigger_queue WHERE id = ANY(:ids) AND state NOT IN ('done', 'dead')"),
                params,
            ).scalar_one()
        if unfinished == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT state, EXTRACT(EPOCH FROM created_at), EXTRACT(EPOCH FROM finished_at) "
                "FROM trigger_queue WHERE id = ANY(:ids)"
            ),
            params,
        ).all()
    done = [(float(c), float(f)) for state, c, f in rows if state == "done"]
    return {
        "done": len(done),
        "dead": sum(1 for state, _, _ in rows if state == "dead"),
        "unfinished": int(unfinished),
        "first_enqueue": min((c for c, _ in done), default=0.0),
        "last_done": max((f for _, f in done), default=0.0),
        "latencies": [f - c for c, f in done],
    }


def warm_up(stack: Stack) -> None:
    """One trigger through the whole path: the daemon has loaded the code location and the sensor ticks."""
    ids, _ = post_all(stack, f"warm-{uuid.uuid4().hex[:6]}", 1, 1)
    figures = wait_finished(stack.engine, ids, limit_s=300)
    if figures["done"] != 1:
        raise RuntimeError(f"the warm-up trigger did not finish: {figures} {stack.tail()}")


@dataclass(frozen=True)
class Seen:
    """One trigger posted while its user's stream was read: the POST's answer and the `phase_completed`
    event's arrival on the stream, both on this process's wall clock (seconds since the epoch)."""

    sync_id: str
    trigger_id: int
    answered: float
    completed: float | None  # None: not seen before the deadline

    @property
    def latency(self) -> float | None:
        return None if self.completed is None else self.completed - self.answered


def stream_latencies(stack: Stack, samples: int, user: str, limit_s: float = DRAIN_LIMIT_S) -> list[Seen]:
    """`samples` phase-1 POSTs for `user`, one a second, while the user's WebSocket stream
    (`/ws/users/{user}`, opened first, from its first event) is read: each trigger's POST answer and its
    `phase_completed` event's arrival, as the user sees them. Stops reading once every trigger's event
    came, or `limit_s` after the last POST."""
    answered: dict[str, tuple[int, float]] = {}
    completed: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {stack.token}"}

    async def run() -> None:
        async with aiohttp.ClientSession(stack.api, timeout=aiohttp.ClientTimeout(total=None)) as http:
            ws = await http.ws_connect(f"/ws/users/{user}", params={"after": "0"}, protocols=("bearer", stack.token))
            all_seen = asyncio.Event()

            async def read() -> None:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(message.data)
                    if event["type"] == "phase_completed":
                        completed.setdefault(event["sync_id"], time.time())
                        if len(completed) >= samples:
                            all_seen.set()

            reader = asyncio.create_task(read())
            for n in range(samples):
                started = time.monotonic()
                body = {"user_id": user, "sync_id": f"{user}-s{n}", "seller_id": SELLER}
                async with http.post("/api/v1/workflow/phase/1", json=body, headers=headers) as response:
                    answer = await response.text()
                    if response.status != 202:
                        raise RuntimeError(f"POST phase 1: {response.status} {answer[:300]}")
                answered[body["sync_id"]] = (int(json.loads(answer)["trigger_id"]), time.time())
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_seen.wait(), limit_s)
            await ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    asyncio.run(run())
    return [Seen(sync, trigger, at, completed.get(sync)) for sync, (trigger, at) in answered.items()]


def drain_by_audit(stack: Stack, prefix: str, count: int, clients: int) -> dict[str, Any]:
    """`count` phase-1 POSTs by `clients` clients, then until each has its completed phase audit row (both
    sides write one): done per second from the first POST sent to the last completion committed."""
    roots = [os.getpid(), *filter(None, [cpu.postmaster_pid(stack.engine)])]
    before = cpu.sample(roots)
    started = time.time()
    _, posts = post_all(stack, prefix, count, clients)
    deadline = time.monotonic() + DRAIN_LIMIT_S
    query = text(
        "SELECT count(*), EXTRACT(EPOCH FROM max(finished_at)) FROM phase_audit "
        "WHERE outcome = 'completed' AND phase = 1 AND user_id LIKE :users"
    )
    while True:
        with stack.engine.connect() as conn:
            done, last = conn.execute(query, {"users": f"{prefix}-u%"}).one()
        if done >= count or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    spent = cpu.per_component(before, cpu.sample(roots), component)
    elapsed = float(last) - started if last is not None else 0.0
    return {
        "done": int(done),
        "elapsed_s": elapsed,
        "per_s": done / elapsed if elapsed > 0 else 0.0,
        "posts": posts,
        "cpu_s": spent,
    }


COMPONENTS = [  # a command line's component (bench/cpu.py), first match
    ("resources.sandbox", "sandbox"),
    ("api.app:create_app", "api"),
    ("multiprocessing.spawn", "api"),  # uvicorn's worker processes (the sandbox runs one process)
    ("multiprocessing.forkserver", "run_workers"),  # the warm launcher's fork server and the runs it forks
    ("dagster-daemon", "dagster_daemon"),
    ("dagster api grpc", "code_server"),
    ("redis-server", "redis"),
    ("server.js", "peer_api"),
    ("worker.js", "peer_worker"),
    ("bench.", "load_generator"),
]


def component(cmdline: str) -> str:
    """Which part of a side a process is, by its command line."""
    if "postgres" in cmdline.split(" ", 1)[0]:  # the server, and its backends named `postgres: ...`
        return "postgresql"
    return next((name for needle, name in COMPONENTS if needle in cmdline), "other")

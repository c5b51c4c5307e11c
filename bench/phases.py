"""Seven-phase pipeline benchmarks, end to end through the running system: the API (its own uvicorn
process), the Dagster daemon with the phase sensor, the sandbox's integrations backend, PostgreSQL.

- phase_drain_per_s: 2,000 phase-1 triggers POSTed by 16 clients; triggers done per second, from the
  first trigger's enqueue to the last one's completion (the rows' own timestamps, the database's clock).
- phase_latency_p95_s.low_rate: one phase-1 trigger a second; p95 of enqueue -> done per trigger.
- phase_post_p99_ms.c32: p99 of the POST's answer time with 32 clients posting at once, after the drain,
  while the pipeline works off what they post; beside it, the same with the API alone (measured first,
  before the daemon starts) and a plain Starlette route's (the floor of this client on these cores).

The sandbox's call backs (phase 1 -> 2 -> ... -> 7) are switched off, so every figure is about the
phase-1 triggers the bench posted. Environment: BENCH_PHASE_TRIGGERS (2000), BENCH_PHASE_CLIENTS (16),
BENCH_PHASE_LOW_RATE_SAMPLES (30), BENCH_PHASE_C32_POSTS (1000), API_WORKERS (uvicorn workers; as `make run`:
one per core). The sensors run at their shipped intervals (SENSOR_INTERVAL_SECONDS, PHASE_SENSOR_INTERVAL_S).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.common import api_workers, drive, emit, postgres_engine, quantile, serve
from domain.core.models import Tenant
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.core.tokens import mint_dev_token

BENCH = "phases"
ROOT = Path(__file__).resolve().parents[1]
TRIGGERS = int(os.environ.get("BENCH_PHASE_TRIGGERS", "2000"))
CLIENTS = int(os.environ.get("BENCH_PHASE_CLIENTS", "16"))
LOW_RATE_SAMPLES = int(os.environ.get("BENCH_PHASE_LOW_RATE_SAMPLES", "30"))
C32_POSTS = int(os.environ.get("BENCH_PHASE_C32_POSTS", "1000"))
SELLER = "bench-seller"
DRAIN_LIMIT_S = float(os.environ.get("BENCH_PHASE_DRAIN_LIMIT_S", "900"))  # a stalled pipeline ends the bench


class Stack:
    """Sandbox, API and Dagster daemon as processes on one throwaway PostgreSQL database."""

    def __init__(self, engine: Engine) -> None:
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
        python = sys.executable
        sandbox = self.processes.spawn(
            python, "-m", "uvicorn", "resources.sandbox.app:create_app", "--factory", "--port", str(sandbox_port),
            "--no-access-log", "--log-level", "warning",
        )  # fmt: skip
        api = self.processes.spawn(
            python, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(api_port),
            "--workers", str(api_workers()), "--no-access-log", "--log-level", "warning",
        )  # fmt: skip
        self.wait_up(self.sandbox + "/", sandbox)
        self.wait_up(self.api + "/health", api)
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
        self.processes.dagster_daemon()

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


def low_rate(stack: Stack) -> list[float]:
    ids: list[int] = []
    for n in range(LOW_RATE_SAMPLES):
        started = time.monotonic()
        new, _ = post_all(stack, f"low{n}", 1, 1)
        ids.extend(new)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    figures = wait_finished(stack.engine, ids)
    return list(figures["latencies"])


def main() -> None:
    # SIGTERM (a stopped `make bench`) ends through `finally`, so the stack's processes are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = Stack(postgres_engine())
    # The load generator's own pauses are not the API's: what this process has imported (~120,000
    # objects, a 50 ms full collection) leaves the garbage collector's view before any POST is timed.
    gc.freeze()
    try:
        alone: list[float] = []
        if C32_POSTS:
            # The API alone first, as on machines of its own (the daemon not started yet: the triggers wait
            # in the queue), after a few POSTs that open its pools' connections.
            warm, _ = post_all(stack, "alone-warm", 64, 32)
            queued, alone = post_all(stack, "alone", C32_POSTS, 32)
            queued += warm
        stack.start_daemon()
        if alone:  # worked off before anything else is measured
            backlog = wait_finished(stack.engine, queued)
            if backlog["done"] != len(queued):
                raise RuntimeError(f"the API-alone triggers did not all finish: {backlog} {stack.tail()}")
        warm_up(stack)

        latencies = low_rate(stack)
        if latencies:
            emit(
                BENCH,
                "phase_latency_p95_s.low_rate",
                quantile(latencies, 0.95),
                "s",
                "<= 5",
                samples=len(latencies),
                median_s=round(statistics.median(latencies), 3),
                max_s=round(max(latencies), 3),
            )

        ids, posts = post_all(stack, "drain", TRIGGERS, CLIENTS)
        figures = wait_finished(stack.engine, ids)
        elapsed = figures["last_done"] - figures["first_enqueue"]
        emit(
            BENCH,
            "phase_drain_per_s",
            figures["done"] / elapsed if elapsed > 0 else 0.0,
            "triggers/s",
            ">= 100",
            triggers=len(ids),
            clients=CLIENTS,
            done=figures["done"],
            dead=figures["dead"],
            unfinished=figures["unfinished"],
            elapsed_s=round(elapsed, 3),
            post_p99_ms_c16=round(quantile(posts, 0.99) * 1000, 3),
        )

        if C32_POSTS:
            _, posts = post_all(stack, "c32", C32_POSTS, 32)
            # The floor under that figure: the same client and POSTs against a plain Starlette route
            # (bench/deploy.py's reference app, as many workers as the API) on the same machine, the
            # stack idle.
            reference = serve(stack.processes, "bench.deploy:reference_app", "/ping")  # 405 to a GET: up
            _, floor = post_all(stack, "ref", C32_POSTS, 32, reference=reference)
            emit(
                BENCH,
                "phase_post_p99_ms.c32",
                quantile(posts, 0.99) * 1000,
                "ms",
                "<= 50",
                posts=len(posts),
                median_ms=round(statistics.median(posts) * 1000, 3),
                reference_p99_ms=round(quantile(floor, 0.99) * 1000, 3),
                reference_median_ms=round(statistics.median(floor) * 1000, 3),
                api_alone_p99_ms=round(quantile(alone, 0.99) * 1000, 3),
                api_alone_median_ms=round(statistics.median(alone) * 1000, 3),
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()

"""Shared by the benchmarks: fresh databases on the throwaway PostgreSQL, or SQLite files, and output."""

import asyncio
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
from sqlalchemy import Engine, Table, create_engine, text

from domain.core import migrate
from domain.core.models import TriggerQueue
from domain.core.store import make_engine


def emit(bench: str, metric: str, value: float, unit: str, target: str, **extra: object) -> None:
    print(
        json.dumps(
            {"bench": bench, "metric": metric, "value": round(value, 3), "unit": unit, "target": target, **extra}
        ),
        flush=True,
    )


def postgres_engine() -> Engine:
    admin_url = os.environ["TEST_POSTGRES_URL"]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    _recycle_wal(admin)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
    migrate.upgrade(engine)
    return engine


WAL_SEGMENTS_RECYCLED = 6


def _recycle_wal(admin: Engine) -> None:
    """A running PostgreSQL reuses its WAL segment files (recycled at checkpoints); the throwaway cluster
    of `make bench` has none, and writes each new 16 MB segment zero-filled and fsync'd first, while every
    commit waits (`IO:WALInitSync` in pg_stat_activity: the phase POSTs stalled 150-570 ms at c32 when it
    fell in their half second). Segments made, then recycled by a checkpoint, before any figure is taken:
    the next ones (min_wal_size, 80 MB) are ready, as on a server that has been running."""
    with admin.connect() as conn:
        if conn.execute(text("SELECT count(*) FROM pg_ls_waldir()")).scalar_one() > WAL_SEGMENTS_RECYCLED:
            return  # done already (an earlier bench on this cluster)
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_wal (n integer)"))
        for _ in range(WAL_SEGMENTS_RECYCLED):
            conn.execute(text("INSERT INTO bench_wal VALUES (1)"))  # a switch needs something written
            conn.execute(text("SELECT pg_switch_wal()"))
        conn.execute(text("CHECKPOINT"))


def trigger_queue_table() -> Table:
    """The queue's table, for the benches' bulk inserts of ready-made rows (Core, no ORM objects)."""
    return cast(Table, TriggerQueue.__table__)


def sqlite_engine() -> Engine:
    path = Path(tempfile.mkdtemp(prefix="wrk-bench-")) / "bench.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    return engine


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q < 1), nearest rank: no interpolation beyond the samples."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def api_workers() -> int:
    """As `make run` has it (scripts/supervise.py): API_WORKERS, by default one per core."""
    value = os.environ.get("API_WORKERS")
    return int(value) if value else len(os.sched_getaffinity(0))


def serve(processes: Any, factory: str, ready: str, env: dict[str, str] | None = None) -> str:
    """An app factory served as `make run` serves the API (uvicorn, api_workers() workers); its URL once
    `ready` answers. `processes`: a tests.servers.Processes."""
    from tests.servers import free_port, wait_for

    port = free_port()
    processes.spawn(
        sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(port),
        "--workers", str(api_workers()), "--no-access-log", "--log-level", "warning",
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(url + ready)
    return url


Call = tuple[str, str, dict[str, Any]]  # method, path, aiohttp request keywords (json=..., headers=...)


@dataclass(frozen=True)
class Driven:
    answers: list[tuple[float, int, str]]  # each request's seconds, status and body, in completion order
    elapsed_s: float
    client_share: float  # the load generator's share of the cores it ran on, printed with the figures

    @property
    def latencies(self) -> list[float]:
        return [seconds for seconds, _, _ in self.answers]


def drive(url: str, work: Sequence[Sequence[Call]], headers: dict[str, str] | None = None) -> Driven:
    """Each inner sequence is one client's requests, sent one after another on a connection of its own;
    all clients at once. aiohttp: httpx's client cost ~2.7 ms of CPU a request where aiohttp's costs
    ~0.1 ms, and the load generator shares the cores with what it measures."""
    answers: list[tuple[float, int, str]] = []

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=max(1, len(work)))
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(url, headers=headers, connector=connector, timeout=timeout) as http:

            async def client(calls: Sequence[Call]) -> None:
                for method, path, kwargs in calls:
                    started = time.perf_counter()
                    async with http.request(method, path, **kwargs) as response:
                        text = await response.text()
                    answers.append((time.perf_counter() - started, response.status, text))

            await asyncio.gather(*(client(calls) for calls in work))

    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    share = (time.process_time() - cpu) / (elapsed * len(os.sched_getaffinity(0)))
    return Driven(answers, elapsed, round(share, 3))

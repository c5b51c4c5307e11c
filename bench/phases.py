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
import os
import signal
import statistics
import sys
import time

from bench.common import emit, postgres_engine, quantile, serve
from bench.phase_load import Stack, post_all, wait_finished, warm_up

BENCH = "phases"
TRIGGERS = int(os.environ.get("BENCH_PHASE_TRIGGERS", "2000"))
CLIENTS = int(os.environ.get("BENCH_PHASE_CLIENTS", "16"))
LOW_RATE_SAMPLES = int(os.environ.get("BENCH_PHASE_LOW_RATE_SAMPLES", "30"))
C32_POSTS = int(os.environ.get("BENCH_PHASE_C32_POSTS", "1000"))


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

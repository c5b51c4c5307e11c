"""The phase pipeline against the system it replaces: BullMQ + Fastify + pg (bench/peers/bullmq), side by
side, in alternating rounds (ours, the peer with Redis `appendfsync everysec`, the peer with no Redis
persistence; BENCH_ROUNDS rounds, 3 by default), each side on its own throwaway PostgreSQL database
(migrated by the project: the same tables), its own sandbox, the same load generator and figures:

- phase_latency_p95_s: one phase-1 trigger a second for one user, from the POST's answer to the
  `phase_completed` event read on that user's WebSocket stream (`/ws/users/{user}` on both sides);
- phase_drain_per_s: 2,000 phase-1 POSTs by 16 clients; from the first POST sent to the last completed
  phase audit row (both sides write it);
- phase_post_p99_ms: 1,000 POSTs by 32 clients while the pipeline works off what they post.

Every round prints its figures and the load average; at the end the medians of the per-round ratios
ours / peer with Redis everysec (`phase_latency_p95_ratio` <= 10, `phase_drain_ratio` >= 1.0,
`phase_post_p99_ratio` <= 1.0; the project commits with fsync, as everysec nearly does), and the same
against the peer without persistence under `*_ratio.nopersist`. Our side's rounds also print where a
trigger's time goes, stage by stage (`phase_stage_*_ms`, p50 with p95 beside it; `stages`).

Environment: BENCH_ROUNDS (3), BENCH_PHASE_TRIGGERS (2000), BENCH_PHASE_CLIENTS (16),
BENCH_PHASE_LOW_RATE_SAMPLES (30), BENCH_PHASE_C32_POSTS (1000), API_WORKERS (both sides' server
processes; one per core). The peer's worker runs as many jobs at once as our phase workers process
triggers: PHASE_WORKERS x PHASE_ROW_WORKERS (2 x 4). scripts/ensure-bullmq-peer installs Node.js, redis-server and
the peer's npm packages when missing.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import api_workers, emit, postgres_engine, quantile
from bench.phase_load import ROOT, Seen, Stack, drain_by_audit, post_all, stream_latencies
from bench.stages import stage_figures, trigger_stages
from domain.core.settings import Settings

BENCH = "phases_vs_bullmq"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TRIGGERS = int(os.environ.get("BENCH_PHASE_TRIGGERS", "2000"))
CLIENTS = int(os.environ.get("BENCH_PHASE_CLIENTS", "16"))
LOW_RATE_SAMPLES = int(os.environ.get("BENCH_PHASE_LOW_RATE_SAMPLES", "30"))
C32_POSTS = int(os.environ.get("BENCH_PHASE_C32_POSTS", "1000"))
PEER = ROOT / "bench" / "peers" / "bullmq"
REDIS = {
    "everysec": ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
    "nopersist": ["--appendonly", "no", "--save", ""],
}
SIDES = ("ours", "peer_everysec", "peer_nopersist")
REFERENCE = "peer_everysec"  # what the ratios' names without a suffix compare against


@dataclass(frozen=True)
class Figures:
    latency_p95_s: float
    drain_per_s: float
    post_p99_ms: float


# (figure, ratio's name, its target); each ratio is ours / the peer's
RATIOS = (
    ("latency_p95_s", "phase_latency_p95_ratio", "<= 10"),
    ("drain_per_s", "phase_drain_ratio", ">= 1.0"),
    ("post_p99_ms", "phase_post_p99_ratio", "<= 1.0"),
)


def round_ratios(figures: Mapping[str, Figures]) -> dict[str, float]:
    """One round's ratios, ours / each peer: the reference peer's under the plain names, the other's
    with its mode as a suffix (`phase_drain_ratio.nopersist`)."""
    out: dict[str, float] = {}
    ours = figures["ours"]
    for side, peer in figures.items():
        if side == "ours":
            continue
        suffix = "" if side == REFERENCE else "." + side.removeprefix("peer_")
        for field, name, _ in RATIOS:
            theirs = getattr(peer, field)
            out[name + suffix] = getattr(ours, field) / theirs if theirs > 0 else float("inf")
    return out


def median_ratios(rounds: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float, float]]:
    """Each ratio's median over the rounds, with its lowest and highest."""
    names = dict.fromkeys(name for ratios in rounds for name in ratios)
    return {
        name: (statistics.median(values), min(values), max(values))
        for name in names
        if (values := [ratios[name] for ratios in rounds if name in ratios])
    }


def target_of(name: str) -> str:
    return next(target for _, ratio, target in RATIOS if name.split(".")[0] == ratio)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# -- one side's figures ----------------------------------------------------------------------------------


def measure(stack: Stack, side: str, number: int) -> tuple[Figures, list[Seen]]:
    """The three figures on a stack that is up (ours with its daemon, or the peer), as the user sees them."""
    warm = stream_latencies(stack, 2, f"warm-{uuid.uuid4().hex[:6]}", limit_s=300)
    if any(s.completed is None for s in warm):
        raise RuntimeError(f"{side}: the warm-up triggers did not complete: {stack.tail()}")
    seen = stream_latencies(stack, LOW_RATE_SAMPLES, f"lowrate-{uuid.uuid4().hex[:6]}")
    latencies = [s.latency for s in seen if s.latency is not None]
    drain = drain_by_audit(stack, "drain", TRIGGERS, CLIENTS)
    _, posts = post_all(stack, "c32", C32_POSTS, 32)
    figures = Figures(
        latency_p95_s=quantile(latencies, 0.95) if latencies else float("inf"),
        drain_per_s=drain["per_s"],
        post_p99_ms=quantile(posts, 0.99) * 1000,
    )
    extra = {"side": side, "round": number}
    emit(
        BENCH, f"phase_latency_p95_s.{side}", figures.latency_p95_s, "s", "", **extra,
        samples=len(latencies), missed=len(seen) - len(latencies),
        median_s=round(statistics.median(latencies), 4) if latencies else None,
    )  # fmt: skip
    emit(
        BENCH, f"phase_drain_per_s.{side}", figures.drain_per_s, "triggers/s", "", **extra,
        triggers=TRIGGERS, clients=CLIENTS, done=drain["done"], elapsed_s=round(drain["elapsed_s"], 3),
        post_p99_ms_c16=round(quantile(drain["posts"], 0.99) * 1000, 3),
    )  # fmt: skip
    emit(
        BENCH, f"phase_post_p99_ms.{side}", figures.post_p99_ms, "ms", "", **extra,
        posts=len(posts), median_ms=round(statistics.median(posts) * 1000, 3),
    )  # fmt: skip
    # Where the drain's CPU went (bench/cpu.py): ms a trigger, per component; the machine has 2 cores.
    done = max(drain["done"], 1)
    per_trigger = {name: round(seconds * 1000 / done, 3) for name, seconds in drain["cpu_s"].items()}
    emit(
        BENCH, f"phase_drain_cpu_ms_per_trigger.{side}", round(sum(per_trigger.values()), 3), "ms", "", **extra,
        **per_trigger, cores_busy=round(sum(drain["cpu_s"].values()) / max(drain["elapsed_s"], 1e-9), 2),
    )  # fmt: skip
    return figures, seen


def ours(number: int) -> Figures:
    stack = Stack(postgres_engine())
    try:
        stack.start_daemon()
        figures, seen = measure(stack, "ours", number)
        emit_stages(stack, seen, number)
        return figures
    finally:
        stack.stop()


def emit_stages(stack: Stack, seen: Sequence[Seen], number: int) -> None:
    """Where the low-rate triggers' time went, stage by stage (bench/stages.py), p50 and p95 per stage."""
    per_trigger = trigger_stages(stack.engine, stack.home, seen)
    for stage, (p50, p95, samples) in stage_figures(per_trigger).items():
        emit(BENCH, f"phase_stage_{stage}_ms", p50, "ms", "", side="ours", round=number, p95_ms=round(p95, 3),
             samples=samples)  # fmt: skip


def ensure_peer() -> str:
    """redis-server's path, once Node.js, redis-server and the peer's packages are there."""
    done = subprocess.run([str(ROOT / "scripts" / "ensure-bullmq-peer")], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the BullMQ peer cannot run: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def wait_redis(port: int, process: subprocess.Popen[bytes], stack: Stack) -> None:
    """Until redis-server answers PING (it exits on a bad option: the bench ends with its log)."""
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited ({process.returncode}): {stack.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.1)


def peer(number: int, mode: str, redis_server: str) -> Figures:
    from tests.servers import free_port

    stack = Stack(postgres_engine(), api=False)
    settings = Settings(environment="development")
    try:
        redis_port, peer_port = free_port(), free_port()
        data = tempfile.mkdtemp(prefix="wrk-bench-redis-", dir=stack.home)
        redis = stack.processes.spawn(
            redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", data, "--daemonize", "no",
            *REDIS[mode],
        )  # fmt: skip
        wait_redis(redis_port, redis, stack)
        env = {
            "DATABASE_URL": stack.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
            "REDIS_PORT": str(redis_port),
            "PEER_PORT": str(peer_port),
            "API_WORKERS": str(api_workers()),
            "PEER_CONCURRENCY": str(settings.phase_workers * settings.phase_row_workers),
            "INTEGRATIONS_API_URL": stack.sandbox + "/integrations",
            "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        }
        server = stack.processes.spawn("node", str(PEER / "server.js"), env=env)
        stack.processes.spawn("node", str(PEER / "worker.js"), env=env)
        stack.api = f"http://127.0.0.1:{peer_port}"
        stack.wait_up(stack.api + "/health", server)
        figures, _ = measure(stack, f"peer_{mode}", number)
        return figures
    finally:
        stack.stop()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    redis_server = ensure_peer()
    gc.freeze()  # as bench/phases.py: the load generator's imports leave the collector's view
    rounds: list[dict[str, float]] = []
    for number in range(1, ROUNDS + 1):
        figures = {
            "ours": ours(number),
            "peer_everysec": peer(number, "everysec", redis_server),
            "peer_nopersist": peer(number, "nopersist", redis_server),
        }
        ratios = round_ratios(figures)
        for name, value in ratios.items():
            emit(BENCH, name, value, "ratio", target_of(name), round=number)
        one, five, fifteen = load_average()
        emit(BENCH, "loadavg_1m", one, "load", "", round=number, loadavg_5m=five, loadavg_15m=fifteen)
        rounds.append(ratios)
    for name, (median, low, high) in median_ratios(rounds).items():
        emit(BENCH, name, median, "ratio", target_of(name), rounds=len(rounds), low=round(low, 3),
             high=round(high, 3), against=REFERENCE if "." not in name else "peer_" + name.split(".")[1])  # fmt: skip


if __name__ == "__main__":
    main()

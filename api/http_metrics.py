"""The API process's own figures: HTTP requests per route template, their latency, requests in flight,
open live connections. Each API worker counts its own; with several workers (uvicorn --workers) they
are summed through prometheus_client's multiprocess mode: whoever starts the workers points
PROMETHEUS_MULTIPROC_DIR at an empty folder shared by them (scripts/supervise.py, the image's command,
tests/servers.py), each worker writes its values there, and a scrape of any worker reads them all.
A worker marks its live gauges dead when it stops; one that died without stopping is marked at the
next scrape (its pid is gone). Without PROMETHEUS_MULTIPROC_DIR the figures are the process's own.

Labels stay bounded: the route is the matched route's template (`/v1/automation-versions/{version_id}/
status`, never the id), `<unmatched>` for a path no route serves; an unknown method is `OTHER`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import Scope

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "wrk_http_requests",
    "HTTP requests answered, per method, route template and status (every API worker)",
    ["method", "route", "status"],
    registry=None,
)
DURATION = Histogram(
    "wrk_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), per method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=None,
)
IN_FLIGHT = Gauge(
    "wrk_http_requests_in_flight",
    "HTTP requests being answered now (every API worker; open SSE streams included)",
    multiprocess_mode="livesum",
    registry=None,
)
LIVE_CONNECTIONS = Gauge(
    "wrk_live_connections",
    "Open live-update connections (every API worker)",
    ["transport"],
    multiprocess_mode="livesum",
    registry=None,
)
PROCESS_METRICS = (REQUESTS, DURATION, IN_FLIGHT, LIVE_CONNECTIONS)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR) or None


def route_template(scope: Scope) -> str:
    """The path template of the route that served `scope` (the router names it in the scope; a wrong
    method still names its route). A request refused before routing (a body too large) is matched here."""
    served = scope.get("route")
    if served is not None:
        return str(served.path)
    partial = None
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.path)
        if match is Match.PARTIAL and partial is None:
            partial = str(route.path)
    return partial or UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


class _Workers(Collector):
    """Every worker's figures from the shared folder, after marking the workers that died unannounced."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        for pid in _dead_pids(self.path):
            mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]
        metrics: Iterable[Metric] = MultiProcessCollector.merge(_sized(self.path), accumulate=True)  # type: ignore[no-untyped-call]
        return metrics


def _sized(path: str) -> list[str]:
    """The folder's files, but one a worker is creating right now: it opens it empty, then sizes it, and an
    empty file is not one prometheus_client can read."""
    sized = []
    for file in Path(path).glob("*.db"):
        with contextlib.suppress(FileNotFoundError):  # a live gauge's file, removed as its worker died
            if file.stat().st_size > 0:
                sized.append(str(file))
    return sized


def _dead_pids(path: str) -> Iterable[int]:
    for file in Path(path).glob("gauge_live*_*.db"):
        pid = int(file.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            yield pid
        except PermissionError:
            continue


def register(registry: CollectorRegistry) -> None:
    """Expose the process figures in `registry`: every worker's from the shared folder, or this process's."""
    path = multiproc_dir()
    if path:
        registry.register(_Workers(path))
        return
    for metric in PROCESS_METRICS:
        registry.register(metric)


def worker_stopped() -> None:
    """This worker is stopping: its live gauges (in flight, connections) no longer count."""
    path = multiproc_dir()
    if path:
        with contextlib.suppress(OSError):
            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


for _transport in ("websocket", "sse"):  # both series from the start, at zero
    LIVE_CONNECTIONS.labels(_transport)

"""`GET /metrics`: Prometheus text format (prometheus_client).

The numbers are made by other processes (the API enqueues, sensors claim, run workers finish rows and
write the phase audit rows), so each scrape reads them from the store through custom collectors, in one
read-only transaction; only the open live connections are this process's own.

Who may scrape: with METRICS_TOKEN set, a caller sending `Authorization: Bearer <METRICS_TOKEN>`
(Prometheus's `authorization.credentials_file`); without it, callers on loopback (the API listens on
127.0.0.1 by default, and a scraper on the host or a sidecar reaches it there). Either way an ops token
with a platform role (ops_admin, admin) may read it too, so an operator can curl it. The figures are
platform-wide counts, no tenant's data, but they show the system's load, so not the world's to read.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Authenticator
from api.openapi import Endpoint
from api.phase_stream import PhaseStream
from api.problems import Problem
from domain.core.models import PhaseOutcome
from domain.core.settings import LOOPBACK_HOSTS, Settings
from domain.core.store import read_transaction
from domain.phases import phase_metrics
from domain.queue import queue

PLATFORM_ROLES = frozenset({"ops_admin", "admin"})


class StoreCollector(Collector):
    """Queue depth and age, phase transitions and latency: read from the store at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with read_transaction(self.engine, snapshot=True) as session:  # one snapshot for every figure
            stats: dict[str, Any] = queue.stats(session)
            figures = phase_metrics.read(session)
        depth = GaugeMetricFamily("wrk_queue_depth", "Trigger queue rows per kind and state", labels=["kind", "state"])
        oldest = GaugeMetricFamily(
            "wrk_queue_oldest_available_age_seconds",
            "Age of the oldest row waiting to be claimed, per kind (0: none waiting)",
            labels=["kind"],
        )
        launched = GaugeMetricFamily(
            "wrk_queue_oldest_launched_age_seconds",
            "Time since the launch of the oldest row still launched, per kind (0: none)",
            labels=["kind"],
        )
        for kind, kind_stats in stats["kinds"].items():
            for state, count in kind_stats["states"].items():
                depth.add_metric([kind, state], count)
            oldest.add_metric([kind], kind_stats["oldest_available_age_s"] or 0.0)
            launched.add_metric([kind], kind_stats["oldest_launched_age_s"] or 0.0)
        yield depth
        yield oldest
        yield launched

        counter = CounterMetricFamily(
            "wrk_phase_transitions",
            "Phase runs per phase and outcome (completed; failed: back to the queue with backoff; dead)",
            labels=["phase", "outcome"],
        )
        for phase in range(1, 8):
            for outcome in PhaseOutcome:
                counter.add_metric([str(phase), outcome.value], figures.transitions.get((phase, outcome.value), 0))
        yield counter
        yield _histogram(
            "wrk_phase_duration_seconds", "Run time of one phase for one trigger (all outcomes)", figures.durations
        )
        yield _histogram(
            "wrk_phase_latency_seconds", "Phase trigger enqueued -> phase completed (end to end)", figures.latencies
        )


def _histogram(name: str, documentation: str, by_phase: dict[int, phase_metrics.Histogram]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["phase"])
    for phase, histogram in sorted(by_phase.items()):
        buckets = [(_bound(b), float(c)) for b, c in zip(histogram.bounds, histogram.buckets, strict=True)]
        family.add_metric([str(phase)], [*buckets, ("+Inf", float(histogram.count))], histogram.total)
    return family


def _bound(bound: float) -> str:
    return repr(float(bound))


class ConnectionsCollector(Collector):
    """Open live connections of this API process (with several workers, each counts its own)."""

    def __init__(self, stream: PhaseStream) -> None:
        self.stream = stream

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "wrk_live_connections", "Open live-update connections of this API process", labels=["transport"]
        )
        for transport, count in sorted(self.stream.connections.items()):
            gauge.add_metric([transport], count)
        yield gauge


def metrics_registry(engine: Engine, stream: PhaseStream) -> CollectorRegistry:
    """The app's own registry (not prometheus_client's global one: two apps in one process, as in the
    tests, would otherwise register the same names twice)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine))
    registry.register(ConnectionsCollector(stream))
    return registry


def _allowed(request: Request) -> None:
    settings: Settings = request.app.state.settings
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if authorization:
        authenticator: Authenticator = request.app.state.authenticator
        principal = authenticator.authenticate(request)
        request.state.actor = principal.sub
        if principal.roles & PLATFORM_ROLES:
            return
        raise Problem(
            403, "forbidden", f"/metrics needs METRICS_TOKEN or one of the platform roles {sorted(PLATFORM_ROLES)}"
        )
    client = request.client.host if request.client else ""
    if expected is None and client in LOOPBACK_HOSTS:
        return
    raise Problem(401, "unauthorized", "/metrics needs a bearer token (METRICS_TOKEN or an ops token)")


async def metrics(request: Request) -> Response:
    _allowed(request)
    registry: CollectorRegistry = request.app.state.metrics_registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (text format): queue, phases, live connections",
        media_type="text/plain",
        auth=False,
        errors={401: ["unauthorized"], 403: ["forbidden"]},
        tags=["system"],
    ),
]

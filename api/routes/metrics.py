"""`GET /metrics`: Prometheus text format (prometheus_client).

Most numbers are made by other processes (the API enqueues, sensors claim, runs finish rows and write
audit rows, the flows bump their counters), so each scrape reads them from the store through a custom
collector, in one read-only snapshot: queue depth and age, phase figures (domain/phases/phase_metrics.py),
the flows' counters (domain/core/counters.py) and backlogs (domain/core/backlogs.py). The HTTP figures
and live connections are the API workers' own, summed over every worker (api/http_metrics.py). The
metric list is in docs/operations.md ("Metrics").

Who may scrape, one rule for every caller: with METRICS_TOKEN set, only a request sending
`Authorization: Bearer <METRICS_TOKEN>` (Prometheus's `authorization.credentials_file`); any other is
401, from loopback too. Without METRICS_TOKEN, only callers on loopback (the API listens on 127.0.0.1 by
default; a scraper on the host or a sidecar reaches it there), whatever they send; any other is 403. No
user token opens it, an ops token included. The figures are platform-wide counts, no tenant's data, but
they show the system's load, so not the world's to read.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import http_metrics
from api.openapi import Endpoint
from api.problems import Problem
from domain.batch.batch_jobs import JOBS
from domain.core import backlogs, counters
from domain.core.counters import Histogram
from domain.core.models import DEPLOYMENT_ACTIONS, ExecutionStatus, PhaseOutcome
from domain.core.settings import LOOPBACK_HOSTS, Settings
from domain.core.store import read_transaction
from domain.phases import phase_metrics
from domain.queue import queue
from domain.queue.triggers import KINDS
from domain.workflows.workflow_states import EXECUTION_FINAL

# The flows' counters (domain/core/counters.py): stored name -> help, labels and the label values shown at
# zero before their first event (None: only the values seen).
FLOW_COUNTERS: dict[str, tuple[str, dict[str, Sequence[str] | None]]] = {
    "builds": ("Builds requested, and their outcomes", {"outcome": ("requested", "succeeded", "failed")}),
    "deploy_actions": (
        "Deployments ended, per action and outcome (refused: refused after the platform call, undone)",
        {"action": DEPLOYMENT_ACTIONS, "outcome": ("succeeded", "failed", "refused")},
    ),
    "deploy_compensations": ("Deployments whose platform change was undone (compensated)", {}),
    "deploy_reconciliation_acts": (
        "What deploy reconciliation did: finished or undone a deployment, activated or deactivated a workflow",
        {"act": ("finished", "undone", "activated", "deactivated")},
    ),
    "deploy_drift": ("Workflows reconciliation found running on the platform against the store, or the reverse", {}),
    "releases": ("Releases ended, per outcome", {"outcome": ("succeeded", "failed")}),
    "release_repository_builds": (
        "Repository builds of releases ended, per repository and outcome (a resumed one counts each end)",
        {"repository": None, "outcome": ("succeeded", "failed")},
    ),
    "workflow_executions_finished": (
        "Workflow executions ended, per final status",
        {"status": tuple(sorted(s.value for s in EXECUTION_FINAL))},
    ),
    "workflow_step_retries": ("Service calls of workflow steps sent again (retries and re-sends)", {}),
    "approvals": ("Approvals requested, decided, expired", {"event": ("requested", "decided", "expired")}),
    "batch_messages_published": (
        "Batch messages published (to the broker, or handed to the outbox transport), per job",
        {"job": tuple(job.name for job in JOBS)},
    ),
    "triggers_dead": (
        "Triggers that went dead (no attempts left, or a permanent error), per kind",
        {"kind": tuple(KINDS)},
    ),
}
FLOW_HISTOGRAMS = {
    "build_duration_seconds": "Build requested -> succeeded or failed",
    "release_duration_seconds": "Release requested -> succeeded or failed (a resumed one: from its first request)",
    "approval_decision_seconds": "Approval requested -> decided",
}


class StoreCollector(Collector):
    """The figures other processes make, read from the store at each scrape in one snapshot."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with read_transaction(self.engine) as session:  # one snapshot for every figure
            stats: dict[str, Any] = queue.stats(session)
            figures = phase_metrics.read(session)
            flows = counters.read(session)
            waiting = backlogs.read(session, self.settings.approval_expiry_warning_seconds)
        yield from _queue(stats)
        yield from _phases(figures)
        yield from _flow_counters(flows)
        yield from _backlogs(waiting)


def _queue(stats: dict[str, Any]) -> Iterator[Metric]:
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


def _phases(figures: phase_metrics.Figures) -> Iterator[Metric]:
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
        "wrk_phase_duration_seconds",
        "Run time of one phase for one trigger (all outcomes)",
        {(("phase", str(p)),): h for p, h in figures.durations.items()},
    )
    yield _histogram(
        "wrk_phase_latency_seconds",
        "Phase trigger enqueued -> phase completed (end to end)",
        {(("phase", str(p)),): h for p, h in figures.latencies.items()},
    )


def _flow_counters(flows: counters.Counters) -> Iterator[Metric]:
    for name, (documentation, labels) in FLOW_COUNTERS.items():
        family = CounterMetricFamily(f"wrk_{name}", documentation, labels=list(labels))
        series = {key: 0 for key in _zeros(labels)}
        series.update({key: value for (stored, key), value in flows.counters.items() if stored == name})
        for key, value in sorted(series.items()):
            family.add_metric([value_of for _, value_of in _ordered(key, labels)], value)
        yield family
    for name, documentation in FLOW_HISTOGRAMS.items():
        found = {key: h for (stored, key), h in flows.histograms.items() if stored == name}
        yield _histogram(f"wrk_{name}", documentation, found, zero=counters.BOUNDS[name])


def _zeros(labels: Mapping[str, Sequence[str] | None]) -> list[counters.Labels]:
    """Every combination of the label values known beforehand (none when a label's values are not)."""
    combinations: list[dict[str, str]] = [{}]
    for label, values in labels.items():
        if values is None:
            return []
        combinations = [{**combination, label: value} for combination in combinations for value in values]
    return [tuple(sorted(combination.items())) for combination in combinations]


def _ordered(key: counters.Labels, labels: Mapping[str, Any]) -> list[tuple[str, str]]:
    values = dict(key)
    return [(label, values.get(label, "")) for label in labels]


def _backlogs(waiting: backlogs.Backlogs) -> Iterator[Metric]:
    executions = GaugeMetricFamily("wrk_workflow_executions", "Workflow executions per status, now", labels=["status"])
    for status in ExecutionStatus:
        executions.add_metric([status.value], waiting.executions.get(status.value, 0))
    yield executions
    yield GaugeMetricFamily(
        "wrk_approvals_pending", "Approvals waiting for a decision", value=waiting.approvals_pending
    )
    yield GaugeMetricFamily(
        "wrk_approvals_expiring_soon",
        "Pending approvals whose expiry is within APPROVAL_EXPIRY_WARNING_SECONDS",
        value=waiting.approvals_expiring_soon,
    )
    pending = GaugeMetricFamily(
        "wrk_batch_messages_pending", "Batch messages not published yet, per job", labels=["job"]
    )
    age = GaugeMetricFamily(
        "wrk_batch_oldest_pending_age_seconds",
        "Age of the oldest batch message not published yet, per job (0: none)",
        labels=["job"],
    )
    for job in sorted({job.name for job in JOBS} | set(waiting.batch_pending)):
        pending.add_metric([job], waiting.batch_pending.get(job, 0))
        age.add_metric([job], waiting.batch_oldest_pending_age_s.get(job, 0.0))
    yield pending
    yield age
    outbox = GaugeMetricFamily(
        "wrk_outbox_messages",
        "Notifications and approval callbacks waiting to be delivered (pending) or given up (dead)",
        labels=["channel", "state"],
    )
    for (channel, state), count in sorted(waiting.outbox.items()):
        outbox.add_metric([channel, state], count)
    yield outbox
    oldest = GaugeMetricFamily(
        "wrk_outbox_oldest_pending_age_seconds",
        "Age of the oldest notification or approval callback waiting to be delivered (0: none)",
        labels=["channel"],
    )
    for channel, seconds in sorted(waiting.outbox_oldest_pending_age_s.items()):
        oldest.add_metric([channel], seconds)
    yield oldest


def _histogram(
    name: str,
    documentation: str,
    series: Mapping[counters.Labels, Histogram],
    zero: tuple[float, ...] | None = None,
) -> Metric:
    """A histogram family from cumulative histograms per label set; with `zero` (its bounds), an empty
    unlabelled one when nothing was observed yet."""
    labels = [label for label, _ in next(iter(series), ())]
    family = HistogramMetricFamily(name, documentation, labels=labels)
    if not series and zero is not None:
        series = {(): Histogram(zero, tuple(0 for _ in zero), 0, 0.0)}
    for key, histogram in sorted(series.items()):
        buckets = [(_bound(b), float(c)) for b, c in zip(histogram.bounds, histogram.buckets, strict=True)]
        family.add_metric([value for _, value in key], [*buckets, ("+Inf", float(histogram.count))], histogram.total)
    return family


def _bound(bound: float) -> str:
    return repr(float(bound))


def metrics_registry(engine: Engine, settings: Settings) -> CollectorRegistry:
    """The app's own registry (not prometheus_client's global one: two apps in one process, as in the
    tests, would otherwise register the same names twice)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine, settings))
    http_metrics.register(registry)
    return registry


def _allowed(request: Request) -> None:
    """The one rule (the module's docstring): the scrape token when set, else loopback only."""
    settings: Settings = request.app.state.settings
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), expected):
            return
        raise Problem(401, "unauthorized", "/metrics needs `Authorization: Bearer <METRICS_TOKEN>`")
    client = request.client.host if request.client else ""
    if client not in LOOPBACK_HOSTS:
        raise Problem(403, "forbidden", "/metrics answers loopback only while METRICS_TOKEN is not set")


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
        "Prometheus metrics (text format): HTTP, queue, phases, every flow's outcomes and backlogs, live "
        "connections. With METRICS_TOKEN set: that bearer token only; unset: loopback only",
        media_type="text/plain",
        auth=False,
        errors={401: ["unauthorized"], 403: ["forbidden"]},
        tags=["system"],
    ),
]

"""`GET /metrics`: Prometheus text format that prometheus_client's own parser reads, with the numbers
other processes make read from the store, and who may scrape it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import delete, select
from starlette.testclient import TestClient

from api.app import create_app
from domain.core.models import PhaseAudit, Tenant, TriggerQueue
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.phases import phase_metrics
from domain.queue import queue
from tests.api.conftest import bearer, make_token
from tests.servers import ServerThread

METRICS_TOKEN = "scraper-secret-0123456789"


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", metrics_token=SecretStr(METRICS_TOKEN))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels (parsed by prometheus_client)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(engine) -> Samples:
    """One scrape of /metrics over the store (an app of its own, with the scrape token)."""
    app = create_app(Settings(environment="test", metrics_token=SecretStr(METRICS_TOKEN)), engine)
    with TestClient(app) as scraper:
        answer = scraper.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert answer.status_code == 200
    return samples(answer.text)


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def counters_of(found: Samples) -> Samples:
    """The counters and histogram counts of a scrape: what must never go back."""
    return {key: v for key, v in found.items() if key[0].endswith(("_total", "_count", "_sum", "_bucket"))}


def assert_none_went_back(before: Samples, after: Samples) -> None:
    went_back = {key: (v, after.get(key)) for key, v in counters_of(before).items() if after.get(key, -1) < v}
    assert not went_back


def enqueue_phases(engine, n: int) -> str:
    tenant_id = str(uuid.uuid4())
    with transaction(engine) as session:
        session.add(Tenant(id=tenant_id, name=f"metrics-{tenant_id[:8]}"))
        session.flush()
        for k in range(n):
            payload: dict[str, Any] = {"tenant_id": tenant_id, "user_id": f"u{k}", "sync_id": "s", "phase": 1}
            queue.enqueue(session, "phase", tenant_id, payload, dedup_key=f"m:{k}")
    return tenant_id


def test_metrics_parse_and_show_the_queue_depth_after_enqueues(client, engine):
    scraper = bearer(METRICS_TOKEN)
    before = samples(client.get("/metrics", headers=scraper).text)
    assert before[("wrk_queue_depth", (("kind", "phase"), ("state", "available")))] == 0
    assert before[("wrk_queue_oldest_available_age_seconds", (("kind", "phase"),))] == 0

    enqueue_phases(engine, 3)
    answer = client.get("/metrics", headers=scraper)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    after = samples(answer.text)
    assert after[("wrk_queue_depth", (("kind", "phase"), ("state", "available")))] == 3
    assert after[("wrk_queue_depth", (("kind", "build"), ("state", "available")))] == 0
    assert after[("wrk_queue_oldest_available_age_seconds", (("kind", "phase"),))] >= 0
    assert after[("wrk_live_connections", (("transport", "websocket"),))] == 0


def test_with_a_scrape_token_only_that_token_opens_metrics_loopback_and_ops_tokens_included(client, settings, engine):
    platform = make_token(settings, tenants=["t1"], roles=["ops_admin"])
    for headers in ({}, bearer("wrong"), bearer(platform), {"Authorization": METRICS_TOKEN}):
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "unauthorized", headers
    assert client.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
    server = ServerThread(create_app(settings, engine)).start()
    try:  # on loopback: the token is still needed
        assert httpx.get(f"{server.url}/metrics", timeout=60).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=bearer(platform), timeout=60).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=bearer(METRICS_TOKEN), timeout=60).status_code == 200
    finally:
        server.stop()


def test_without_a_scrape_token_metrics_are_open_on_loopback_only_whatever_the_caller_sends(engine):
    settings = Settings(environment="test")
    platform = make_token(settings, tenants=["t1"], roles=["ops_admin"])
    app = create_app(settings, engine)
    server = ServerThread(app).start()
    try:
        for headers in ({}, bearer("anything"), bearer(platform)):
            assert httpx.get(f"{server.url}/metrics", headers=headers, timeout=60).status_code == 200, headers
    finally:
        server.stop()
    with TestClient(app) as client:  # a client that is not on loopback: refused, an ops token too
        for headers in ({}, bearer(platform)):
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 403 and answer.json()["code"] == "forbidden", headers


def test_phase_transitions_and_latency_histograms_count_every_audited_run_and_never_go_back(client, engine):
    tenant_id = enqueue_phases(engine, 2)
    with transaction(engine) as session:
        first, second = session.scalars(
            select(TriggerQueue).where(TriggerQueue.tenant_id == tenant_id).order_by(TriggerQueue.id)
        ).all()

        def audit(trigger: TriggerQueue, phase: int, outcome: str, duration: float, after_enqueue: float) -> None:
            finished = trigger.created_at + timedelta(seconds=after_enqueue)
            session.add(
                PhaseAudit(
                    tenant_id=tenant_id,
                    user_id="u",
                    sync_id="s",
                    phase=phase,
                    trigger_id=trigger.id,
                    outcome=outcome,
                    duration_s=duration,
                    started_at=finished - timedelta(seconds=duration),
                    finished_at=finished,
                )
            )

        audit(first, 1, "failed", 0.02, 0.2)  # then retried with backoff
        audit(first, 1, "completed", 0.3, 12.5)
        audit(second, 1, "completed", 0.03, 1.5)
        audit(second, 7, "dead", 4.0, 40.0)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(client.get("/metrics", headers=bearer(METRICS_TOKEN)).text)

    found = scrape()
    transitions = {
        (labels[1][1], labels[0][1]): value
        for (name, labels), value in found.items()
        if name == "wrk_phase_transitions_total"
    }
    assert transitions[("1", "completed")] == 2 and transitions[("1", "failed")] == 1
    assert transitions[("7", "dead")] == 1 and transitions[("2", "completed")] == 0
    assert len(transitions) == 7 * 3  # every phase and outcome, zeros included

    def bucket(name: str, phase: str, le: str) -> float:
        return found[(f"{name}_bucket", (("le", le), ("phase", phase)))]

    # Run time of phase 1: 0.02, 0.3, 0.03 s, the audit rows' own values above (nothing here is timed).
    assert bucket("wrk_phase_duration_seconds", "1", "0.025") == 1
    assert bucket("wrk_phase_duration_seconds", "1", "0.05") == 2
    assert bucket("wrk_phase_duration_seconds", "1", "0.5") == 3
    assert bucket("wrk_phase_duration_seconds", "1", "+Inf") == 3
    assert found[("wrk_phase_duration_seconds_count", (("phase", "1"),))] == 3
    assert found[("wrk_phase_duration_seconds_sum", (("phase", "1"),))] == pytest.approx(0.35)
    # End to end, completed runs only: phase 1 took 12.5 s and 1.5 s from enqueue; phase 7 never completed.
    assert bucket("wrk_phase_latency_seconds", "1", "1.0") == 0
    assert bucket("wrk_phase_latency_seconds", "1", "2.0") == 1
    assert bucket("wrk_phase_latency_seconds", "1", "15.0") == 2
    assert found[("wrk_phase_latency_seconds_sum", (("phase", "1"),))] == pytest.approx(14.0, abs=0.01)
    assert ("wrk_phase_latency_seconds_count", (("phase", "7"),)) not in found

    # Folded into the totals (the sweeper), then the queue's finished rows and the audit rows pruned: the
    # counters stand, and go on from there.
    counters = {key: value for key, value in found.items() if key[0].startswith("wrk_phase_")}
    with transaction(engine) as session:
        assert phase_metrics.fold(session) == 4
    assert {key: value for key, value in scrape().items() if key in counters} == counters
    with transaction(engine) as session:
        session.execute(delete(PhaseAudit))
        session.execute(delete(TriggerQueue))
    assert {key: value for key, value in scrape().items() if key in counters} == counters
    third = enqueue_phases(engine, 1)
    with transaction(engine) as session:
        trigger = session.scalars(select(TriggerQueue).where(TriggerQueue.tenant_id == third)).one()
        session.add(
            PhaseAudit(
                tenant_id=third,
                user_id="u",
                sync_id="s",
                phase=1,
                trigger_id=trigger.id,
                outcome="completed",
                duration_s=0.04,
                started_at=trigger.created_at,
                finished_at=trigger.created_at + timedelta(seconds=0.9),
            )
        )
    after = scrape()
    assert after[("wrk_phase_transitions_total", (("outcome", "completed"), ("phase", "1")))] == 3
    assert after[("wrk_phase_latency_seconds_bucket", (("le", "1.0"), ("phase", "1")))] == 1

"""HTTP metrics and live connections through a real uvicorn with two worker processes, as `make run` serves
the API: a scrape answered by either worker shows what every worker answered (prometheus_client's
multiprocess mode over the folder the uvicorn helper prepares), by route template, never by raw path."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from domain.core.models import Tenant
from domain.core.store import transaction
from tests.api.conftest import bearer, make_token
from tests.servers import Processes, until

HANG = 120


def scrape(api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with httpx.Client(timeout=HANG) as fresh:  # a new connection: either worker may answer
        text = fresh.get(f"{api}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def per_worker(folder: str, pattern: str, name: str, **labels: str) -> dict[int, float]:
    """What each worker wrote of one sample, from its own file in the shared folder."""
    found: dict[int, float] = {}
    for file in Path(folder).glob(pattern):
        if file.stat().st_size == 0:  # a worker creating it: empty until it is sized
            continue
        pid = int(file.stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([str(file)], accumulate=False):
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found[pid] = found.get(pid, 0.0) + sample.value
    return found


def requests_total(found: dict, method: str, route: str, status: str) -> float:
    return found.get(("wrk_http_requests_total", (("method", method), ("route", route), ("status", status))), 0.0)


def test_a_scrape_by_either_worker_sums_the_requests_every_worker_answered(database_url):
    stack = Processes({"DATABASE_URL": database_url, "ENVIRONMENT": "test"})
    try:
        api = stack.uvicorn("api.app:create_app", workers=2)
        folder = stack.folders[-1]
        sent = {"health": 0}

        def one_more_health_check() -> bool:
            with httpx.Client(timeout=HANG) as fresh:  # a new connection each: the workers share them out
                assert fresh.get(f"{api}/health").status_code == 200
            sent["health"] += 1
            answered = per_worker(folder, "counter_*.db", "wrk_http_requests_total", route="/health")
            return len(answered) == 2 and sent["health"] >= 20

        until(one_more_health_check, "both workers answering /health")
        version_id = str(uuid.uuid4())
        for _ in range(3):  # an id in the path: counted under the route's template
            assert httpx.get(f"{api}/v1/automation-versions/{version_id}", timeout=HANG).status_code == 401
        unmatched = requests_total(scrape(api), "GET", "<unmatched>", "404")  # the helper's wait for "/"
        assert httpx.get(f"{api}/no/such/{version_id}", timeout=HANG).status_code == 404

        def scraped_by_both() -> bool:
            found = scrape(api)
            assert requests_total(found, "GET", "/health", "200") == sent["health"]
            assert requests_total(found, "GET", "/v1/automation-versions/{version_id}", "401") == 3
            assert requests_total(found, "GET", "<unmatched>", "404") == unmatched + 1
            assert not any(version_id in str(labels) for _, labels in found)  # no id in any label
            count = ("wrk_http_request_duration_seconds_count", (("method", "GET"), ("route", "/health")))
            assert found[count] == sent["health"]
            scrapes = per_worker(folder, "counter_*.db", "wrk_http_requests_total", route="/metrics")
            return len(scrapes) == 2  # each worker has answered a scrape (and saw the same figures)

        until(scraped_by_both, "a scrape answered by each worker")
        (Path(folder) / "counter_1.db").touch()  # a worker creating its file: empty until it is sized
        assert requests_total(scrape(api), "GET", "/health", "200") == sent["health"]
    finally:
        stack.stop()


def test_live_connections_are_summed_over_the_workers(database_url, engine):
    tenant_id = str(uuid.uuid4())
    with transaction(engine) as session:
        session.add(Tenant(id=tenant_id, name=f"live-{tenant_id[:8]}"))
    stack = Processes({"DATABASE_URL": database_url, "ENVIRONMENT": "test"})
    with contextlib.ExitStack() as streams:
        try:
            api = stack.uvicorn("api.app:create_app", workers=2)
            folder = stack.folders[-1]
            settings_token = make_token_for(tenant_id)
            opened = 0

            def one_more_stream() -> bool:
                nonlocal opened
                client = streams.enter_context(httpx.Client(timeout=HANG))
                url = f"{api}/v1/users/u{opened}/events?after=0"
                streams.enter_context(client.stream("GET", url, headers=bearer(settings_token)))
                opened += 1
                until(lambda: sum(live(folder).values()) == opened, "the stream counted")
                return len([n for n in live(folder).values() if n > 0]) == 2

            until(one_more_stream, "streams open on both workers", timeout=HANG)
            until(lambda: scrape(api)[_sse()] == opened, "every worker's streams in one scrape", timeout=HANG)
            for _ in range(5):
                assert scrape(api)[_sse()] == opened
        finally:
            streams.close()
            stack.stop()


def _sse() -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("wrk_live_connections", (("transport", "sse"),))


def live(folder: str) -> dict[int, float]:
    return per_worker(folder, "gauge_livesum_*.db", "wrk_live_connections", transport="sse")


def make_token_for(tenant_id: str) -> str:
    from domain.core.settings import Settings

    return make_token(Settings(environment="test"), tenants=[tenant_id], roles=["ops_admin"], sub="ops")

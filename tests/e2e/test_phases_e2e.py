"""The seven-phase chain through a real dagster-daemon: one phase-1 POST, the daemon's phase sensor
launching batch runs, the sandbox's integrations backend calling each next phase back, until all seven
phases are completed and the proof packet is downloadable with its hash verified. The user's runs are
found by their tag, as in the UI."""

import hashlib
from datetime import UTC, datetime, timedelta

import httpx

from api.app import create_app
from domain import models
from domain.settings import Settings
from domain.store import transaction
from tests.api.conftest import bearer, make_token
from tests.domain import factories
from tests.servers import ServerThread, until

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { __typename ... on Runs { results { runId status tags { key value } } } }
}
"""


def _queue(engine, tenant) -> str:
    with transaction(engine) as session:
        rows = session.query(models.TriggerQueue).filter(models.TriggerQueue.tenant_id == tenant).all()
        return "\n" + "\n".join(f"{r.id} {r.payload.get('phase')} {r.state} {r.attempts} {r.last_error}" for r in rows)


def _log(stack) -> str:
    lines = stack["log"].read_text().splitlines()
    return "\n" + "\n".join(line for line in lines if "SensorDaemon" not in line)[-6000:]


def test_one_phase_one_post_ends_with_seven_phases_and_a_proof_packet(stack, engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
    settings = Settings(environment="test", proof_packet_dir=str(stack["proof_packet_dir"]))
    api = ServerThread(create_app(settings, engine), port=stack["api_port"]).start()
    try:
        http = httpx.Client(base_url=api.url, timeout=30)
        long_lived = datetime.now(UTC) + timedelta(hours=1)
        service = bearer(make_token(settings, tenants=[tenant], roles=["service"], sub="main-api", exp=long_lived))
        accepted = http.post("/api/v1/workflow/phase/1", json={"user_id": "e2e", "seller_id": "s-1"}, headers=service)
        assert accepted.status_code == 202, accepted.text
        sync = f"/v1/users/e2e/syncs/{accepted.json()['sync_id']}"

        def done():
            view = http.get(sync, headers=service)
            if view.status_code != 200:
                return None
            body = view.json()
            return body if all(v == "completed" for v in body["phases"].values()) else None

        view = until(done, lambda: http.get(sync, headers=service).text + _queue(engine, tenant) + _log(stack))
        assert view["progress"] == {**view["progress"], "phase": 7, "status": "completed", "percent": 100}
        (packet,) = view["proof_packets"]
        pdf = http.get(packet["href"], headers=service)
        twin = http.get(packet["href"], params={"format": "json"}, headers=service)
    finally:
        api.stop()
    digest = hashlib.sha256(twin.content).hexdigest()
    assert pdf.status_code == 200 and digest.encode() in pdf.content
    assert pdf.headers["x-proof-json-sha256"] == digest

    def finished_runs():
        runs = stack["graphql"]._execute(RUNS, {"filter": {"tags": [{"key": "wrk/user.e2e", "value": "e2e"}]}})
        results = runs["runsOrError"]["results"]
        # A run's last trigger can be done before the run itself has ended (its end is written after).
        return results if results and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in results) else None

    results = until(finished_runs, "the user's phase runs end")
    assert all(r["status"] == "SUCCESS" for r in results), results
    run_ids = {a["run_id"] for a in view["audit"]}
    assert run_ids <= {r["runId"] for r in results}
    phases_tagged = {t["value"] for r in results for t in r["tags"] if t["key"] == "wrk/phases"}
    assert set(",".join(phases_tagged).split(",")) == {str(p) for p in range(1, 8)}

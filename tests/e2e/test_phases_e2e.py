"""The seven-phase chain through a real dagster-daemon: one phase-1 POST, the daemon's phase sensor
launching batch runs, the sandbox's integrations backend calling each next phase back, until all seven
phases are completed and the proof packet is downloadable with its hash verified, for users whose ids are
in several scripts. The user's runs are found by their tag, as in the UI."""

import functools
import hashlib
from datetime import UTC, datetime, timedelta

import httpx

from api.app import create_app
from domain.core import models
from domain.core.settings import Settings
from domain.core.store import transaction
from orchestration_defs.phases import user_tag
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


def _why(http, location, headers, engine, tenant, stack) -> str:
    return http.get(location, headers=headers).text + _queue(engine, tenant) + _log(stack)


def _callbacks(stack, count):
    """The sandbox's call backs, once `count` of them have ended."""
    callbacks = httpx.get(f"{stack['sandbox_url']}/_sandbox/integrations/callbacks").json()
    return callbacks if len(callbacks) >= count else None


def _finished_runs(stack, user):
    """The user's phase runs found by their tag, as in the UI, once all have ended (a run's last trigger
    can be done before the run itself has ended: its end is written after)."""
    runs = stack["graphql"]._execute(RUNS, {"filter": {"tags": [{"key": user_tag(user), "value": user}]}})
    results = runs["runsOrError"]["results"]
    return results if results and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in results) else None


def _log(stack) -> str:
    lines = stack["log"].read_text().splitlines()
    return "\n" + "\n".join(line for line in lines if "SensorDaemon" not in line)[-6000:]


# Ids in several scripts: each must go through the API (Location), the integrations backend's call backs,
# the outgoing idempotency keys, the run tags and the proof packet, exactly as an ASCII id does.
USERS = ["e2e", "łukasz-ü", "用户-七", "مستخدم", "🦊-user"]
# One sync's phases with the sandbox's four default matches: two claims auto-submitted (phase 5 each),
# one of them paid (7), the other rejected (6).
COMPLETED_PER_PHASE = {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1}


def _completed_per_phase(engine, tenant, user) -> dict[int, int]:
    with transaction(engine) as session:
        audit = session.query(models.PhaseAudit).filter_by(tenant_id=tenant, user_id=user, outcome="completed").all()
    return {p: sum(a.phase == p for a in audit) for p in COMPLETED_PER_PHASE}


def _chain_done(http, location, headers, engine, tenant, user):
    """The user's sync, once every phase is completed and each ran as often as the chain makes it."""
    view = http.get(location, headers=headers)
    if view.status_code != 200 or any(v != "completed" for v in view.json()["phases"].values()):
        return None
    return view.json() if _completed_per_phase(engine, tenant, user) == COMPLETED_PER_PHASE else None


def test_one_phase_one_post_ends_with_seven_phases_and_a_proof_packet(stack, engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
    settings = Settings(environment="test", proof_packet_dir=str(stack["proof_packet_dir"]))
    api = ServerThread(create_app(settings, engine), port=stack["api_port"]).start()
    try:
        http = httpx.Client(base_url=api.url, timeout=30)
        long_lived = datetime.now(UTC) + timedelta(hours=1)
        service = bearer(make_token(settings, tenants=[tenant], roles=["service"], sub="main-api", exp=long_lived))
        syncs = {}
        for user in USERS:
            body = {"user_id": user, "seller_id": "s-1"}
            accepted = http.post("/api/v1/workflow/phase/1", json=body, headers=service)
            assert accepted.status_code == 202, accepted.text
            syncs[user] = accepted.headers["location"]
        views = {
            user: until(
                functools.partial(_chain_done, http, location, service, engine, tenant, user),
                functools.partial(_why, http, location, service, engine, tenant, stack),
            )
            for user, location in syncs.items()
        }
        # Every call back of the chains answered at once (none 5xx, so none was sent again).
        callbacks = until(functools.partial(_callbacks, stack, len(USERS) * 7), "the sandbox's call backs end")
        assert {c["status"] for c in callbacks} == {202}, [c for c in callbacks if c["status"] != 202]
        packets = {}
        for user, view in views.items():
            assert view["user_id"] == user
            assert view["progress"] == {**view["progress"], "phase": 7, "status": "completed", "percent": 100}
            (packet,) = view["proof_packets"]
            pdf = http.get(packet["href"], headers=service)
            packets[user] = (pdf, http.get(packet["href"], params={"format": "json"}, headers=service))
    finally:
        api.stop()
    with transaction(engine) as session:
        triggers = session.query(models.TriggerQueue).filter_by(tenant_id=tenant).all()
    assert len(triggers) == len(USERS) * sum(COMPLETED_PER_PHASE.values()), _queue(engine, tenant)
    for user, (pdf, twin) in packets.items():
        digest = hashlib.sha256(twin.content).hexdigest()
        assert pdf.status_code == 200 and digest.encode() in pdf.content
        assert pdf.headers["x-proof-json-sha256"] == digest
        assert twin.json()["user_id"] == user

    for user, view in views.items():
        results = until(functools.partial(_finished_runs, stack, user), f"{user}'s phase runs end")
        assert all(r["status"] == "SUCCESS" for r in results), results
        run_ids = {a["run_id"] for a in view["audit"]}
        assert run_ids <= {r["runId"] for r in results}
        phases_tagged = {t["value"] for r in results for t in r["tags"] if t["key"] == "wrk/phases"}
        assert set(",".join(phases_tagged).split(",")) == {str(p) for p in range(1, 8)}

"""Users' live phase updates over a real uvicorn: WebSocket order and replay, SSE resume, who may read
which stream, and live delivery of events appended by another process (NOTIFY on PostgreSQL, polling on
SQLite). No time bounds: every wait is a generous timeout that only fails on a real hang."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.app import create_app
from domain.core.models import Tenant
from domain.core.settings import Settings
from domain.core.store import is_postgres, transaction
from domain.core.urls import path_segment
from domain.phases import phase_events
from tests.api.conftest import bearer, make_token
from tests.servers import ROOT, Processes, ServerThread, until

HANG = 120  # seconds: only a stream that never delivers reaches this


@pytest.fixture
def settings() -> Settings:
    # No resync: only NOTIFY (PostgreSQL) or the poller (SQLite) can deliver a live event here.
    return Settings(environment="test", phase_stream_poll_s=0.05, phase_stream_resync_s=3600)


@pytest.fixture
def tenants(engine) -> tuple[str, str]:
    ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    with transaction(engine) as session:
        for tenant_id in ids:
            session.add(Tenant(id=tenant_id, name=f"live-{tenant_id[:8]}"))
    return ids


@pytest.fixture
def api(settings, engine) -> Iterator[str]:
    """The API in a real uvicorn (a thread of this process; the events come from other connections)."""
    server = ServerThread(create_app(settings, engine)).start()
    yield server.url
    server.stop()


def append(engine, tenant_id: str, user_id: str, n: int, phase: int = 1, type: str = "phase_started") -> list[int]:
    seqs = []
    for _ in range(n):
        with transaction(engine) as session:
            event = phase_events.append(
                session,
                tenant_id=tenant_id,
                user_id=user_id,
                sync_id="sync-1",
                phase=phase,
                type=type,
                data={"n": len(seqs)},
            )
            seqs.append(event.seq)
    return seqs


def ws_url(api: str, user_id: str, **query: Any) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{api.replace('http://', 'ws://')}/ws/users/{user_id}" + (f"?{params}" if params else "")


def open_ws(api: str, user_id: str, token: str, **query: Any) -> ClientConnection:
    return connect(ws_url(api, user_id, **query), subprotocols=["bearer", token], open_timeout=HANG)


def receive(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=HANG)) for _ in range(n)]


def refusal(url: str, **kwargs: Any) -> tuple[int, str]:
    """The close code and reason of a refused WebSocket."""
    with connect(url, open_timeout=HANG, **kwargs) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=HANG)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def user_token(settings: Settings, tenant_id: str, user_id: str, roles: list[str] | None = None) -> str:
    return make_token(settings, tenants=[tenant_id], roles=roles or ["user"], sub=user_id)


class SseReader:
    """Reads the events of one text/event-stream response (comment lines, the pings, skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self, n: int) -> list[dict[str, str]]:
        events: list[dict[str, str]] = []
        fields: dict[str, str] = {}
        for line in self.lines:
            if not line:
                if "data" in fields:
                    events.append(fields)
                    if len(events) == n:
                        return events
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise AssertionError(f"stream ended after {events}")


def test_websocket_delivers_in_seq_order_and_replays_what_was_missed_after_a_reconnect(api, engine, settings, tenants):
    tenant, _ = tenants
    token = user_token(settings, tenant, "alice")
    append(engine, tenant, "alice", 3)
    with open_ws(api, "alice", token, after=0) as ws:
        first = receive(ws, 3)
        append(engine, tenant, "alice", 2, phase=2, type="phase_completed")
        live = receive(ws, 2)
    assert [e["seq"] for e in first + live] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in live] == ["phase_completed", "phase_completed"]
    assert live[0] | {"created_at": None} == {
        "seq": 4,
        "type": "phase_completed",
        "tenant_id": tenant,
        "user_id": "alice",
        "sync_id": "sync-1",
        "phase": 2,
        "data": {"n": 0},
        "created_at": None,
    }

    append(engine, tenant, "alice", 3, type="prompt")  # while alice is away
    with open_ws(api, "alice", token, after=5) as ws:
        missed = receive(ws, 3)
        append(engine, tenant, "alice", 1, type="phase_failed")
        after_reconnect = receive(ws, 1)
    assert [e["seq"] for e in missed + after_reconnect] == [6, 7, 8, 9]
    assert [e["type"] for e in missed] == ["prompt"] * 3 and after_reconnect[0]["type"] == "phase_failed"


def test_a_websocket_without_after_starts_live_and_takes_the_token_as_a_query_parameter(api, engine, settings, tenants):
    tenant, _ = tenants
    append(engine, tenant, "alice", 2)
    url = ws_url(api, "alice", access_token=user_token(settings, tenant, "alice"))
    with connect(url, open_timeout=HANG) as ws:
        # No `after`: nothing already stored is sent; the next append is.
        _wait_subscribed(api, "websocket")
        append(engine, tenant, "alice", 1, phase=3)
        (event,) = receive(ws, 1)
    assert event["seq"] == 3 and event["phase"] == 3
    _wait_connections(api, "websocket", lambda n: n == 0)  # a client that leaves is no longer counted


def _wait_subscribed(api: str, transport: str) -> None:
    """Until this API process counts an open connection of `transport` (its subscription is registered
    by then, so an append after this is delivered live, not as a replay)."""
    _wait_connections(api, transport, lambda n: n >= 1)


def _wait_connections(api: str, transport: str, wanted: Callable[[float], bool]) -> None:
    until(lambda: wanted(open_connections(api, transport)), f"open {transport} connections as wanted", HANG, 0.05)


def open_connections(api: str, transport: str) -> float:
    text = httpx.get(f"{api}/metrics", timeout=HANG).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wrk_live_connections" and sample.labels["transport"] == transport:
                return sample.value
    return 0


def test_sse_resumes_after_last_event_id(api, engine, settings, tenants):
    tenant, _ = tenants
    token = user_token(settings, tenant, "alice")
    append(engine, tenant, "alice", 4)
    url = f"{api}/v1/users/alice/events"
    timeout = httpx.Timeout(HANG)
    with httpx.stream("GET", url, headers=bearer(token) | {"Last-Event-ID": "2"}, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        replayed = reader.next(2)
        append(engine, tenant, "alice", 1, type="phase_completed")
        (live,) = reader.next(1)
    assert [e["id"] for e in [*replayed, live]] == ["3", "4", "5"]
    assert [e["event"] for e in [*replayed, live]] == ["phase_started", "phase_started", "phase_completed"]
    assert json.loads(live["data"])["seq"] == 5

    # An EventSource reconnecting sends the last id it saw; `?after=` and `?access_token=` serve browsers.
    append(engine, tenant, "alice", 1, type="prompt")
    with httpx.stream("GET", f"{url}?after=4&access_token={token}", timeout=timeout) as response:
        assert [e["id"] for e in SseReader(response).next(2)] == ["5", "6"]


def test_a_user_cannot_read_another_users_stream(api, engine, settings, tenants):
    tenant, _ = tenants
    append(engine, tenant, "bob", 1)
    alice = user_token(settings, tenant, "alice")
    code, reason = refusal(ws_url(api, "bob", after=0), subprotocols=["bearer", alice])
    assert code == 4403 and reason.startswith("forbidden:")
    answer = httpx.get(f"{api}/v1/users/bob/events?after=0", headers=bearer(alice), timeout=HANG)
    assert answer.status_code == 403
    assert answer.json()["code"] == "forbidden"


def test_refusals_say_why_in_the_close_code(api, settings, tenants):
    tenant, other = tenants
    alice = user_token(settings, tenant, "alice")
    assert refusal(ws_url(api, "alice"))[0] == 4401  # no token
    assert refusal(ws_url(api, "alice", access_token="not-a-jwt"))[0] == 4401
    assert refusal(ws_url(api, "alice", access_token=alice, after="x"))[0] == 4422
    assert refusal(ws_url(api, "alice", access_token=alice, tenant_id=other))[0] == 4403
    two = make_token(settings, tenants=[tenant, other], roles=["user"], sub="alice")
    assert refusal(ws_url(api, "alice", access_token=two))[0] == 4400  # which tenant?
    answer = httpx.get(f"{api}/v1/users/alice/events", headers={"Last-Event-ID": "x"} | bearer(alice), timeout=HANG)
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "Last-Event-ID"
    assert httpx.get(f"{api}/v1/users/alice/events", timeout=HANG).status_code == 401


def test_an_ops_user_reads_any_user_of_its_tenant_but_not_another_tenants(api, engine, settings, tenants):
    tenant, other = tenants
    append(engine, other, "bob", 2, type="prompt")  # bob's stream in the other tenant
    append(engine, tenant, "bob", 1, type="phase_completed")
    ops = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="olga")
    with open_ws(api, "bob", ops, after=0) as ws:
        (event,) = receive(ws, 1)
        append(engine, other, "bob", 1)  # the other tenant's: never sent here
        append(engine, tenant, "bob", 1, type="phase_failed")
        (next_event,) = receive(ws, 1)
    assert (event["tenant_id"], event["seq"], event["type"]) == (tenant, 1, "phase_completed")
    assert (next_event["tenant_id"], next_event["seq"], next_event["type"]) == (tenant, 2, "phase_failed")
    assert refusal(ws_url(api, "bob", access_token=ops, tenant_id=other))[0] == 4403
    answer = httpx.get(f"{api}/v1/users/bob/events", headers=bearer(ops) | {"X-Tenant-ID": other}, timeout=HANG)
    assert answer.status_code == 403
    # The service role reads any user's stream of its tenant too (as it reads their syncs).
    service = make_token(settings, tenants=[tenant], roles=["service"], sub="main-api")
    with open_ws(api, "bob", service, after=1) as ws:
        assert [e["seq"] for e in receive(ws, 1)] == [2]
    # A role outside the ops and service roles reads only its own stream.
    viewer = make_token(settings, tenants=[tenant], roles=["viewer"], sub="vera")
    assert refusal(ws_url(api, "bob", access_token=viewer))[0] == 4403


APPEND_SCRIPT = """
import sys
from domain.phases import phase_events
from domain.core.store import make_engine, transaction
engine = make_engine(sys.argv[1])
for n in range(int(sys.argv[4])):
    with transaction(engine) as session:
        phase_events.append(session, tenant_id=sys.argv[2], user_id=sys.argv[3], sync_id="s", phase=1 + n % 7,
                            type="phase_completed", data={"n": n})
"""


def test_events_appended_by_another_process_reach_a_separate_api_process_live(
    backend, database_url, settings, engine, tenants
):
    """The API and the writer are two processes sharing only the store: NOTIFY carries the news on
    PostgreSQL, the API's poller finds it on SQLite."""
    tenant, _ = tenants
    token = user_token(settings, tenant, "carol")
    processes = Processes(
        {
            "DATABASE_URL": database_url,
            "ENVIRONMENT": "test",
            "PHASE_STREAM_POLL_S": "0.05",
            "PHASE_STREAM_RESYNC_S": "3600",
        }
    )
    try:
        api = processes.uvicorn("api.app:create_app")
        with (
            open_ws(api, "carol", token, after=0) as ws,
            httpx.stream("GET", f"{api}/v1/users/carol/events?after=0", headers=bearer(token), timeout=HANG) as sse,
        ):
            subprocess.run(
                [sys.executable, "-c", APPEND_SCRIPT, database_url, tenant, "carol", "10"], cwd=ROOT, check=True
            )
            over_ws = receive(ws, 10)
            over_sse = SseReader(sse).next(10)
    finally:
        processes.stop()
    assert [e["seq"] for e in over_ws] == list(range(1, 11))
    assert [int(e["id"]) for e in over_sse] == list(range(1, 11))
    assert [e["data"]["n"] for e in over_ws] == list(range(10))


def test_a_lost_listen_connection_is_reopened_and_nothing_appended_meanwhile_is_missed(api, engine, settings, tenants):
    """PostgreSQL: the API's LISTEN connection is killed; its listener reconnects and wakes every
    subscriber to re-read, so the event appended while it was down still arrives (resync is off here)."""
    if not is_postgres(engine):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite polls")
    tenant, _ = tenants
    with open_ws(api, "dora", user_token(settings, tenant, "dora"), after=0) as ws:
        _wait_subscribed(api, "websocket")
        with engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).all()
        assert killed == [(True,)]
        append(engine, tenant, "dora", 2)
        events = receive(ws, 2)
    assert [e["seq"] for e in events] == [1, 2]


@pytest.mark.parametrize("user_id", ["org/42", "用户/七"])
def test_a_users_stream_is_read_when_their_id_holds_a_slash(api, engine, settings, tenants, user_id):
    tenant, _ = tenants
    token = user_token(settings, tenant, user_id)
    append(engine, tenant, user_id, 2)
    segment = path_segment(user_id)
    with httpx.stream("GET", f"{api}/v1/users/{segment}/events?after=0", headers=bearer(token), timeout=HANG) as sse:
        assert sse.status_code == 200
        events = [json.loads(e["data"]) for e in SseReader(sse).next(2)]
    with open_ws(api, segment, token, after=1) as ws:
        (replayed,) = receive(ws, 1)
    assert [e["user_id"] for e in events] == [user_id, user_id] and replayed["seq"] == 2

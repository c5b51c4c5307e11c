from __future__ import annotations

import pytest

from domain.core.errors import NotFound, PermanentError, RetryableError, ServiceTimeout, ValidationRejected
from resources.retry import RetryPolicy
from resources.wrk import WrkPlatformClient

BLUEPRINT = {"steps": [{"id": "fetch", "type": "http"}, {"id": "store", "type": "db", "depends_on": ["fetch"]}]}


@pytest.fixture
def client(sandbox, sleeps):
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=4.0, sleep=sleeps)
    with WrkPlatformClient(sandbox.url, "t0ken", retry=policy, read_timeout_s=0.5) as c:
        yield c


def test_create_activate_deactivate_get(client, sandbox):
    wf = client.create_workflow("Invoices v1", BLUEPRINT, "tenant-1", idempotency_key="binding-1")
    assert wf.id.startswith("wf_") and wf.url.endswith(wf.id) and not wf.active
    assert client.activate_workflow(wf.id).active
    assert client.get_workflow(wf.id).active
    assert not client.deactivate_workflow(wf.id).active
    [call] = sandbox.calls("POST", "/wrk-api/workflows")
    assert call["idempotency_key"] == "binding-1"


def test_same_idempotency_key_returns_the_same_workflow(client, sandbox):
    first = client.create_workflow("a", BLUEPRINT, "t", idempotency_key="binding-7")
    again = client.create_workflow("a", BLUEPRINT, "t", idempotency_key="binding-7")
    assert first.id == again.id
    assert len(sandbox.http.get("/_sandbox/wrk/workflows").json()) == 1


def test_blueprint_validation_failure_is_permanent_with_the_platforms_details(client, sandbox, sleeps):
    with pytest.raises(ValidationRejected) as rejected:
        client.create_workflow("bad", {"steps": [{"id": "x"}]}, "t", idempotency_key="k")
    assert rejected.value.status == 422
    assert rejected.value.details["details"] == [{"path": "blueprint.steps[0].type", "message": "required"}]
    assert len(sandbox.calls("POST", "/wrk-api/workflows")) == 1 and sleeps == []


def test_5xx_three_times_then_success_takes_four_calls_with_growing_backoff(client, sandbox, sleeps, monkeypatch):
    monkeypatch.setattr("random.uniform", lambda a, b: b)  # the jitter's upper bound, to see the curve
    sandbox.fault("POST", "/wrk-api/workflows", count=3, status=503)
    wf = client.create_workflow("a", BLUEPRINT, "t", idempotency_key="k")
    assert wf.id
    assert [c["status"] for c in sandbox.calls("POST", "/wrk-api/workflows")] == [503, 503, 503, 201]
    assert sleeps == [0.5, 1.0, 2.0]


def test_5xx_until_retries_run_out_raises_retryable(client, sandbox, sleeps):
    sandbox.fault("POST", "/wrk-api/workflows", count=10, status=500)
    with pytest.raises(RetryableError) as failed:
        client.create_workflow("a", BLUEPRINT, "t", idempotency_key="k")
    assert failed.value.status == 500
    assert len(sandbox.calls("POST", "/wrk-api/workflows")) == 4 and len(sleeps) == 3
    assert all(0 <= s <= 4.0 for s in sleeps)


def test_timeout_is_retried_then_succeeds(client, sandbox, sleeps):
    sandbox.fault("PATCH", "/wrk-api/workflows/.*/activate", count=1, action="timeout", delay_s=2.0)
    wf = client.create_workflow("a", BLUEPRINT, "t", idempotency_key="k")
    assert client.activate_workflow(wf.id).active
    assert len(sleeps) == 1


def test_timeouts_until_retries_run_out(sandbox, sleeps):
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.01, sleep=sleeps)
    with WrkPlatformClient(sandbox.url, "t", retry=policy, read_timeout_s=0.3) as client:
        sandbox.fault("GET", "/wrk-api/workflows/wf_x", count=2, action="timeout", delay_s=1.5)
        with pytest.raises(ServiceTimeout):
            client.get_workflow("wf_x")
    assert len(sleeps) == 1


def test_429_waits_for_retry_after(client, sandbox, sleeps):
    sandbox.fault("GET", "/wrk-api/workflows/wf_demo_1", count=1, status=429, headers={"Retry-After": "7"})
    assert client.get_workflow("wf_demo_1").id == "wf_demo_1"
    assert sleeps == [7.0]


def test_503_waits_for_retry_after(client, sandbox, sleeps):
    sandbox.fault("GET", "/wrk-api/workflows/wf_demo_1", count=1, status=503, headers={"Retry-After": "11"})
    assert client.get_workflow("wf_demo_1").id == "wf_demo_1"
    assert sleeps == [11.0]


def test_404_and_other_4xx_are_permanent(client, sandbox, sleeps):
    with pytest.raises(NotFound):
        client.activate_workflow("wf_nope")
    sandbox.fault("GET", "/wrk-api/workflows/wf_demo_2", count=1, status=409)
    with pytest.raises(PermanentError) as conflict:
        client.get_workflow("wf_demo_2")
    assert conflict.value.status == 409 and sleeps == []


def test_per_call_retry_override(client, sandbox, sleeps):
    sandbox.fault("PATCH", "/wrk-api/workflows/wf_demo_3/activate", count=5, status=502)
    with pytest.raises(RetryableError):
        client.activate_workflow("wf_demo_3", retry=client.retry.override(max_attempts=2))
    assert len(sandbox.calls("PATCH")) == 2


def test_unreachable_platform_is_retryable(sleeps):
    from tests.servers import free_port

    with (
        WrkPlatformClient(f"http://127.0.0.1:{free_port()}", "t", retry=RetryPolicy(max_attempts=3, sleep=sleeps)) as c,
        pytest.raises(RetryableError),
    ):
        c.get_workflow("wf")
    assert len(sleeps) == 2

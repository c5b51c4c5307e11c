"""Workflow executions, on PostgreSQL (SQLite when TEST_POSTGRES_URL is unset), with the
sandbox's six services served over real HTTP on loopback (no added latency).

- workflow_executions_per_min: executions of a 5-step workflow without approval (a -> b, c, d -> e,
  service calls), each one `workflow` trigger claimed by the queue sensor and run by the job
  `workflow_execution` in process, one after the other. Dagster's launch of a run process (about 2.7 s
  of this machine per run, DESIGN.md) is not included: through the daemon that cost comes on top.
- workflow_engine_executions_per_min: the same executions run by domain.workflows.workflow_engine.run directly
  (the store's commits and the HTTP calls, no Dagster).
- approval_to_next_step_p95_s: a decision committed -> the step after the approval started
  (`started_at` of that step minus the approval's `decided_at`), with the approval sensor ticked right
  after the decision and the run in process; the sensor's interval (SENSOR_INTERVAL_SECONDS, 5 s by
  default) and the run launch are not included.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from sqlalchemy import Engine, select

from bench.common import emit, postgres_engine, quantile, sqlite_engine
from domain.core.lifecycle import Actor
from domain.core.models import HitlApproval, Tenant, WorkflowExecutionStep
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import queue
from domain.workflows import approvals, workflow_engine, workflows
from domain.workflows.workflow_definitions import parse
from orchestration_defs.workflows import workflow_execution
from resources.dagster_resources import DatabaseResource, ServicesResource
from resources.sandbox.app import create_app
from resources.services import Services
from sensors.workflows import approval_queue_sensor, workflow_queue_sensor
from tests.servers import ServerThread

BENCH = "workflows"
EXECUTIONS = int(os.environ.get("BENCH_WORKFLOW_EXECUTIONS", "30"))
APPROVALS = int(os.environ.get("BENCH_WORKFLOW_APPROVALS", "20"))
ACTOR = Actor.user("bench")


def _call(name: str, depends_on: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "service_call",
        "service": "ml_service",
        "path": f"/v1/{name}",
        "body": {"account": {"$ref": "/input/account_id"}},
        "depends_on": depends_on,
    }


FIVE_STEPS = [_call("a", []), _call("b", ["a"]), _call("c", ["a"]), _call("d", ["a"]), _call("e", ["b", "c", "d"])]
WITH_APPROVAL = [
    _call("a", []),
    {
        "name": "review",
        "kind": "approval",
        "assignees": ["bench"],
        "message": "ok?",
        "timeout": "PT1H",
        "depends_on": ["a"],
    },
    _call("after", ["review"]),
]


def _drive(instance: dg.DagsterInstance, database_url: str) -> int:
    resources = {"database": DatabaseResource(url=database_url)}
    ran = 0
    for sensor in (workflow_queue_sensor, approval_queue_sensor):
        context = dg.build_sensor_context(instance=instance, resources=resources, sensor_name=sensor.name)
        for request in sensor.evaluate_tick(context).run_requests or []:
            workflow_execution.execute_in_process(
                run_config=request.run_config,
                instance=instance,
                tags=request.tags,
                resources={"database": DatabaseResource(url=database_url), "services": ServicesResource()},
            )
            ran += 1
    return ran


def _workflow(engine: Engine, tenant_id: str, name: str, steps: list[dict[str, Any]]) -> str:
    with transaction(engine) as session:
        return workflows.create_workflow(session, tenant_id, parse({"name": name, "steps": steps}), ACTOR).id


def _start(engine: Engine, tenant_id: str, workflow_id: str, i: int, queued: bool = True) -> str:
    with transaction(engine) as session:
        workflow = workflows.find_workflow(session, tenant_id, workflow_id)
        assert workflow is not None
        started = workflows.start_execution(
            session, workflow, input={"account_id": f"acc-{i}"}, actor=ACTOR, trigger={"source": "bench"}
        )
        if not queued and started.trigger_id is not None:
            queue.cancel(session, started.trigger_id)  # run by the engine directly, not by a sensor
        return started.execution.id


def main() -> None:
    sandbox = ServerThread(create_app(smtp_port=0)).start()
    os.environ["SANDBOX_PORT"] = str(urlsplit(sandbox.url).port)
    get_settings.cache_clear()
    backend = "postgresql" if os.environ.get("TEST_POSTGRES_URL") else "sqlite"
    engine = postgres_engine() if backend == "postgresql" else sqlite_engine()
    database_url = engine.url.render_as_string(hide_password=False)
    try:
        with transaction(engine) as session:
            tenant = Tenant(name=f"bench-{time.time_ns()}")
            session.add(tenant)
            session.flush()
            tenant_id = tenant.id
        with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
            five = _workflow(engine, tenant_id, "five-steps", FIVE_STEPS)
            _start(engine, tenant_id, five, -1)
            _drive(instance, database_url)  # warm-up: imports, connections
            started = time.perf_counter()
            for i in range(EXECUTIONS):
                _start(engine, tenant_id, five, i)
                _drive(instance, database_url)
            elapsed = time.perf_counter() - started
            emit(
                BENCH,
                "workflow_executions_per_min",
                EXECUTIONS / elapsed * 60,
                "executions/min",
                "none set",
                backend=backend,
                executions=EXECUTIONS,
                steps=5,
                launch="in process (no run process start)",
            )

            # The engine alone (no sensor tick, no Dagster run): what the store and the calls cost.
            services = Services()
            started = time.perf_counter()
            for i in range(EXECUTIONS):
                execution_id = _start(engine, tenant_id, five, 1000 + i, queued=False)
                workflow_engine.run(engine, execution_id, call=services.call)
            elapsed = time.perf_counter() - started
            services.close()
            emit(
                BENCH,
                "workflow_engine_executions_per_min",
                EXECUTIONS / elapsed * 60,
                "executions/min",
                "none set",
                backend=backend,
                executions=EXECUTIONS,
                steps=5,
                launch="engine only",
            )

            gated = _workflow(engine, tenant_id, "with-approval", WITH_APPROVAL)
            delays = []
            for i in range(APPROVALS):
                execution_id = _start(engine, tenant_id, gated, i)
                _drive(instance, database_url)  # runs `a`, opens the approval, ends
                with transaction(engine) as session:
                    row = session.scalars(
                        select(HitlApproval).where(HitlApproval.workflow_execution_id == execution_id)
                    ).one()
                    decided = approvals.decide(
                        session, tenant_id=tenant_id, approval_id=row.id, decision="approve", user_id="bench"
                    ).approval
                _drive(instance, database_url)
                with transaction(engine) as session:
                    after = session.scalars(
                        select(WorkflowExecutionStep).where(
                            WorkflowExecutionStep.workflow_execution_id == execution_id,
                            WorkflowExecutionStep.name == "after",
                        )
                    ).one()
                    assert after.started_at is not None and decided.decided_at is not None
                    delays.append((after.started_at - decided.decided_at).total_seconds())
            p95 = quantile(delays, 0.95)
            emit(
                BENCH,
                "approval_to_next_step_p95_s",
                p95,
                "s",
                "none set",
                backend=backend,
                samples=len(delays),
                median=round(statistics.median(delays), 3),
                includes="sensor tick + run in process; not the sensor interval nor the run launch",
            )
    finally:
        engine.dispose()
        sandbox.stop()


if __name__ == "__main__":
    main()

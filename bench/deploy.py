"""Deploy benchmark: real deploys (Ready to Launch -> Live) through uvicorn on loopback, the sandbox
activating without delay, 16 and 64 concurrent clients; a plain Starlette endpoint in the same run as
the reference. The API runs as `make run` runs it: API_WORKERS uvicorn workers (default: one per core).
Each client deploys the versions of its own project one after another, so every
measured request is a real deploy that archives the previous one."""

import gc
import time
from pathlib import Path

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.common import Call, api_workers, drive, emit, postgres_engine, quantile, serve
from domain.core import lifecycle, models
from domain.core.lifecycle import Actor, Status
from domain.core.settings import Settings
from domain.core.store import transaction
from tests.servers import Processes

BENCH = "deploy"
ROOT = Path(__file__).resolve().parents[1]
PER_CLIENT = 12


def _versions(engine: Engine, clients: int) -> tuple[str, list[list[str]]]:
    walk = [Status.BUILD_IN_PROGRESS, Status.QA_AND_TESTING, Status.READY_TO_LAUNCH]
    actor = Actor.system("bench")
    with transaction(engine) as session:
        tenant = models.Tenant(name=f"bench-{time.time_ns()}")
        session.add(tenant)
        session.flush()
        plan = []
        for c in range(clients):
            project = models.Project(tenant_id=tenant.id, name=f"p{c}")
            session.add(project)
            session.flush()
            ids = []
            for n in range(1, PER_CLIENT + 1):
                version = models.AutomationVersion(
                    tenant_id=tenant.id,
                    project_id=project.id,
                    version_number=n,
                    blueprint={"steps": [{"id": "a", "type": "x"}]},
                )
                session.add(version)
                session.flush()
                for step in walk:
                    lifecycle.transition(session, version, step, actor=actor)
                session.add(
                    models.WorkflowBinding(
                        tenant_id=tenant.id,
                        automation_version_id=version.id,
                        status="active",
                        wrk_workflow_id=f"wf_demo_{version.id[:16]}",
                    )
                )
                ids.append(version.id)
            plan.append(ids)
        return tenant.id, plan


def _p(values: list[float], q: int) -> float:
    return quantile(values, q / 100) * 1000


async def ping(_request: Request) -> JSONResponse:  # the reference: a plain Starlette JSON endpoint
    return JSONResponse({"status": "Live"})


def reference_app() -> Starlette:
    return Starlette(routes=[Route("/ping", ping, methods=["PATCH", "POST"])])


def main() -> None:
    engine = postgres_engine()
    servers = Processes()
    sandbox_url = servers.uvicorn("resources.sandbox.app:create_app", env={"SMTP_PORT": "0"})
    workers = api_workers()
    api_url = serve(
        servers,
        "api.app:create_app",
        "/health",
        {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "WRK_API_URL": sandbox_url,
            "ENVIRONMENT": "test",
            "SMTP_PORT": "1",
        },
    )
    reference_url = servers.uvicorn("bench.deploy:reference_app")
    settings = Settings(environment="test")
    gc.freeze()  # the load generator's imports out of its GC: its pauses are not the API's
    try:
        for clients in (16, 64):
            tenant, plan = _versions(engine, clients)
            from tests.api.conftest import make_token

            token = make_token(settings, tenants=[tenant], roles=["ops_release"], sub="bench")
            headers = {"Authorization": f"Bearer {token}"}
            work = [
                [
                    ("PATCH", f"/v1/automation-versions/{v}/status", {"json": {"status": "Live"}, "headers": headers})
                    for v in ids
                ]
                for ids in plan
            ]
            driven = drive(api_url, work)
            assert all(status == 200 for _, status, _ in driven.answers), driven.answers[:3]
            latencies, elapsed, client_share = driven.latencies, driven.elapsed_s, driven.client_share
            emit(
                BENCH,
                f"deploy_p99_ms.c{clients}",
                _p(latencies, 99),
                "ms",
                "<= 100" if clients == 16 else "-",
                p50_ms=round(_p(latencies, 50), 2),
                requests=len(latencies),
                api_workers=workers,
                client_cpu_share=client_share,
            )
            emit(BENCH, f"deploy_per_s.c{clients}", len(latencies) / elapsed, "req/s", "-")
            if clients == 16:
                ref_work: list[list[Call]] = [[("PATCH", "/ping", {})] * PER_CLIENT for _ in range(clients)]
                ref = drive(reference_url, ref_work)
                ref_latencies, ref_elapsed, ref_share = ref.latencies, ref.elapsed_s, ref.client_share
                emit(
                    BENCH,
                    "reference_per_s.c16",
                    len(ref_latencies) / ref_elapsed,
                    "req/s",
                    "-",
                    p50_ms=round(_p(ref_latencies, 50), 2),
                    p99_ms=round(_p(ref_latencies, 99), 2),
                    client_cpu_share=ref_share,
                )
    finally:
        servers.stop()


if __name__ == "__main__":
    main()

"""deploy/: the instance Dagster's Helm chart renders from deploy/helm/values.yaml passes Dagster's own config
schema, its run launcher (dagster_k8s.K8sRunLauncher) and run coordinator (ours) load their config, and its
limits are those of dagster.yaml; the API manifest is a valid Deployment and Service whose readiness probe
is the API's /ready; the shipped settings pass the production guard. A Dagster or dagster-k8s upgrade that
changes a schema these files rely on fails here."""

from __future__ import annotations

import importlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext
from dagster._serdes import ConfigurableClassData
from dagster_k8s import K8sRunLauncher
from kubernetes.client import ApiClient, V1Deployment, V1Job, V1Service
from sqlalchemy import create_engine, text
from starlette.routing import Route

from domain.core.settings import Settings, get_settings
from orchestration_defs.build import build_automation_version
from orchestration_defs.concurrency import FlowRunCoordinator
from tests.deploy import chart

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: test}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
"""


def _values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def _manifests(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def _settings_env() -> dict[str, str]:
    """What the ConfigMap and the Secret in deploy/k8s/config.yaml put in every pod's environment."""
    env: dict[str, str] = {}
    for doc in _manifests("config.yaml"):
        if doc["metadata"]["name"] == "wrk-orchestration":
            env |= {k: str(v) for k, v in (doc.get("data") or doc.get("stringData") or {}).items()}
    return env


@pytest.fixture
def pod_env(monkeypatch, tmp_path):
    """The environment the chart gives the daemon's and webserver's pods (plus the ConfigMap and Secret), and
    a kubeconfig standing in for the in-cluster credentials a test process does not have."""
    for name, value in _settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    get_settings.cache_clear()
    yield kubeconfig
    get_settings.cache_clear()


def _out_of_cluster(instance: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """The one change to the rendered instance: the test's kubeconfig instead of the pod's service account."""
    launcher = instance["run_launcher"]["config"]
    launcher |= {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return instance


def _load(section: dict[str, Any]) -> Any:
    """The configurable class of an instance section, built from its config as Dagster builds it."""
    return ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(section["config"])).rehydrate()


def _origin(job_name: str) -> RemoteJobOrigin:
    """Where a UI launch says its job comes from (a queued run must name its code location)."""
    location = RegisteredCodeLocationOrigin(location_name="wrk_orchestration")
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)


def _limits(run_queue_config: Any) -> list[tuple[str, Any, int]]:
    limits = run_queue_config.tag_concurrency_limits
    return sorted((lim["key"], json.dumps(lim.get("value")), lim["limit"]) for lim in limits)


def test_the_instance_the_chart_renders_passes_dagsters_schema_and_its_launcher_and_coordinator_load(pod_env, tmp_path):
    values = _values()
    instance = _out_of_cluster(chart.instance_yaml(values, release="wrk", namespace="wrk"), pod_env)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, custom_class = dagster_instance_config(str(tmp_path))  # raises on a schema error
    assert custom_class is None
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["max_resume_run_attempts"] == 0
    assert "run_retries" not in config  # the queue's retry is the one retry path

    launcher = _load(config["run_launcher"])
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == "wrk" and launcher.instance_config_map == "wrk-dagster-instance"
    assert launcher.postgres_password_secret == values["global"]["postgresqlSecretName"]
    assert launcher.dagster_home == values["global"]["dagsterHome"]
    assert set(launcher.env_config_maps) == {"wrk-orchestration"} and set(launcher.env_secrets) == {"wrk-orchestration"}

    coordinator = _load(config["run_coordinator"])
    assert isinstance(coordinator, FlowRunCoordinator)
    queue = coordinator.get_run_queue_config()
    # The tenant limit is the ConfigMap's TENANT_MAX_CONCURRENT_RUNS, through the coordinator's `env:` field.
    tenant = [lim for lim in queue.tag_concurrency_limits if lim["key"] == "wrk/tenant_id"]
    assert tenant == [{"key": "wrk/tenant_id", "value": {"applyLimitPerUniqueValue": True}, "limit": 4}]
    assert _settings_env()["TENANT_MAX_CONCURRENT_RUNS"] == "4"
    # The same limits as on one machine (dagster.yaml, dagster.postgres.yaml): one place to compare.
    for local in ("dagster.yaml", "dagster.postgres.yaml"):
        section = yaml.safe_load((ROOT / local).read_text())["run_coordinator"]
        assert section["class"] == config["run_coordinator"]["class"]
        local_coordinator = _load(section)
        assert _limits(local_coordinator.get_run_queue_config()) == _limits(queue), local
        assert local_coordinator.get_run_queue_config().max_concurrent_runs == queue.max_concurrent_runs

    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        section = config[storage]
        klass = getattr(importlib.import_module(section["module"]), section["class"])
        result = process_config(klass.config_type(), section["config"])  # validated, not connected
        assert result.success, (storage, result.errors)
        pg = result.value["postgres_db"]
        assert pg["password"] == "from-the-secret" and pg["hostname"] == values["postgresql"]["postgresqlHost"]


def test_a_misspelled_limit_in_the_values_fails_dagsters_schema(pod_env, tmp_path):
    values = _values()
    coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["customRunCoordinator"]["config"]
    coordinator["tag_concurrency_limit"] = coordinator.pop("tag_concurrency_limits")  # the key Dagster does not know
    instance = _out_of_cluster(chart.instance_yaml(values), pod_env)
    with pytest.raises(dg.DagsterInvalidConfigError):
        _load(instance["run_coordinator"])


def test_the_rendered_instance_runs_on_postgresql_with_the_k8s_launcher_and_tags_a_submitted_run(
    pod_env, tmp_path, monkeypatch
):
    admin_url = os.environ.get("TEST_POSTGRES_URL")
    if not admin_url:
        message = "TEST_POSTGRES_URL is not set: run the suite with `make test`, which starts PostgreSQL"
        if os.environ.get("WRK_TEST_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    db_name = f"dagster_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {db_name}"))
    try:
        pg = admin.url.set(database=db_name)
        values = _values()
        values["postgresql"] |= {
            "postgresqlHost": pg.host,
            "postgresqlUsername": pg.username,
            "postgresqlDatabase": db_name,
            "postgresqlParams": {},
            "service": {"port": pg.port},
        }
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg.password or "")
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(_out_of_cluster(chart.instance_yaml(values), pod_env)))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert isinstance(instance.run_launcher, K8sRunLauncher)
            assert isinstance(instance.run_coordinator, FlowRunCoordinator)
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            payload = {"tenant_id": "tenant-a", "project_id": "p", "automation_version_id": "v1"}
            run = instance.create_run_for_job(
                build_automation_version,
                run_config={"ops": {"load": {"config": payload}}},
                status=dg.DagsterRunStatus.NOT_STARTED,
                remote_job_origin=_origin(build_automation_version.name),
            )
            run = instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
            assert run.status == dg.DagsterRunStatus.QUEUED  # the daemon dequeues and launches it as a Job
            assert run.tags["wrk/tenant_id"] == "tenant-a" and run.tags["wrk/flow"] == "build"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        admin.dispose()


def test_the_code_location_the_values_and_the_image_name_is_our_definitions():
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module, attribute = args[args.index("-m") + 1], args[args.index("-a") + 1]
    assert isinstance(getattr(importlib.import_module(module), attribute), dg.Definitions)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    dagster_stage = dockerfile.split("FROM base AS dagster", 1)[1].split("FROM base AS api", 1)[0]
    cmd = json.loads(re.search(r"CMD (\[.*?\])", dagster_stage.replace("\\\n", ""), re.S).group(1))
    assert cmd[:3] == ["dagster", "api", "grpc"] and cmd[cmd.index("-m") + 1] == module
    assert cmd[cmd.index("-a") + 1] == attribute and cmd[cmd.index("-p") + 1] == str(deployment["port"])
    # Every Dagster process of the chart runs our image: they load our run coordinator.
    values = _values()
    images = {values[k]["image"]["repository"] for k in ("dagsterWebserver", "dagsterDaemon")}
    assert images == {deployment["image"]["repository"]}


def test_the_api_deployment_is_ready_on_slash_ready_and_its_service_routes_to_it():
    from api.app import create_app

    docs = {doc["kind"]: doc for doc in _manifests("api.yaml")}
    client = ApiClient()
    deployment: V1Deployment = client._ApiClient__deserialize(docs["Deployment"], V1Deployment)
    service: V1Service = client._ApiClient__deserialize(docs["Service"], V1Service)
    (container,) = deployment.spec.template.spec.containers
    assert container.readiness_probe.http_get.path == "/ready"
    assert container.liveness_probe.http_get.path == "/health"
    paths = {route.path for route in create_app(Settings()).routes if isinstance(route, Route)}
    assert {"/ready", "/health"} <= paths
    (port,) = container.ports
    assert port.container_port == 8000 and "--port 8000" in (DEPLOY / "Dockerfile").read_text()
    assert container.readiness_probe.http_get.port == port.name == service.spec.ports[0].target_port
    assert service.spec.selector == deployment.spec.selector.match_labels
    assert deployment.spec.selector.match_labels.items() <= deployment.spec.template.metadata.labels.items()
    sources = {s.config_map_ref.name if s.config_map_ref else s.secret_ref.name for s in container.env_from}
    assert sources == {"wrk-orchestration"}
    (job_doc,) = _manifests("migrate-job.yaml")
    job: V1Job = client._ApiClient__deserialize(job_doc, V1Job)
    assert job.spec.template.spec.containers[0].command == ["wrk-orch", "migrate"]


def test_the_shipped_settings_pass_the_production_guard(monkeypatch):
    env = _settings_env()
    assert env["ENVIRONMENT"] == "production"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # raises if a development default or the sandbox were left in
    assert settings.tenant_max_concurrent_runs == int(env["TENANT_MAX_CONCURRENT_RUNS"])

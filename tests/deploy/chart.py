"""The dagster.yaml Dagster's Helm chart (1.13) renders from deploy/helm/values.yaml: its
`templates/configmap-instance.yaml` and the `dagsterYaml.*` helpers it includes, for the sections our
values use (scheduler, PostgreSQL storages, K8sRunLauncher, a custom run coordinator, run monitoring,
run retries, sensors, schedules, telemetry), written here in Python rather than with `helm template`:
no helm binary, no chart download in a test. A key the chart would read that these values misname shows
up as a missing section, and the instance then fails the checks in test_helm_values.py."""

from __future__ import annotations

from typing import Any

CHART = "dagster"


def fullname(release: str) -> str:
    """The chart's `dagster.fullname`: the release name, suffixed with the chart's unless it contains it."""
    return release if CHART in release else f"{release}-{CHART}"


def _postgres(values: dict[str, Any]) -> dict[str, Any]:
    pg = values["postgresql"]
    username: Any = (
        {"env": "DAGSTER_PG_USERNAME"} if values.get("global", {}).get("postgresqlSecretUsernameKey") else None
    )
    config: dict[str, Any] = {
        "username": username or pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        config["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": config}


def _names(refs: list[dict[str, Any]] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if "name" in ref]


def _k8s_run_launcher(values: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or namespace,
        "image_pull_policy": k8s.get("imagePullPolicy"),
        "service_account_name": values.get("serviceAccount", {}).get("name") or fullname(release),
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{fullname(release)}-instance",
        "postgres_password_secret": (
            values["global"].get("postgresqlSecretName") or f"{fullname(release)}-postgresql-secret"
        ),
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = _names(k8s["envConfigMaps"])
    if k8s.get("envSecrets"):
        config["env_secrets"] = _names(k8s["envSecrets"])
    copied = {
        "envVars": "env_vars",
        "volumeMounts": "volume_mounts",
        "volumes": "volumes",
        "labels": "labels",
        "resources": "resources",
        "securityContext": "security_context",
    }
    for key, name in copied.items():
        if k8s.get(key):
            config[name] = k8s[key]
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if k8s.get("schedulerName"):
        config["scheduler_name"] = k8s["schedulerName"]
    run_k8s = k8s.get("runK8sConfig") or {}
    parts = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    if run_k8s:
        config["run_k8s_config"] = {name: run_k8s[key] for key, name in parts.items() if run_k8s.get(key)}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _run_coordinator(values: dict[str, Any]) -> dict[str, Any] | None:
    daemon = values["dagsterDaemon"]
    coordinator = daemon.get("runCoordinator") or {}
    if not (daemon.get("enabled") and coordinator.get("enabled")):
        return None
    if coordinator["type"] == "CustomRunCoordinator":
        custom = coordinator["config"]["customRunCoordinator"]
        return {"module": custom["module"], "class": custom["class"], "config": custom.get("config") or {}}
    queued = coordinator["config"]["queuedRunCoordinator"]
    config = {
        name: queued[key]
        for key, name in (
            ("maxConcurrentRuns", "max_concurrent_runs"),
            ("tagConcurrencyLimits", "tag_concurrency_limits"),
            ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
        )
        if queued.get(key)
    }
    return {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator", "config": config}


def instance_yaml(values: dict[str, Any], release: str = "wrk", namespace: str = "wrk") -> dict[str, Any]:
    """The instance (dagster.yaml) the chart puts in the `<fullname>-instance` ConfigMap."""
    assert values["runLauncher"]["type"] == "K8sRunLauncher", "only the K8sRunLauncher is rendered here"
    assert values.get("scheduler", {}).get("type", "DagsterDaemonScheduler") == "DagsterDaemonScheduler"
    storage = _postgres(values)
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": _k8s_run_launcher(values, release, namespace),
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
    }
    coordinator = _run_coordinator(values)
    if coordinator is not None:
        instance["run_coordinator"] = coordinator
    daemon = values["dagsterDaemon"]
    monitoring = daemon.get("runMonitoring") or {}
    if daemon.get("enabled") and monitoring.get("enabled"):
        instance["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        }
        for key, name in (("cancelTimeoutSeconds", "cancel_timeout_seconds"),
                          ("maxResumeRunAttempts", "max_resume_run_attempts")):  # fmt: skip
            if monitoring.get(key) is not None:
                instance["run_monitoring"][name] = monitoring[key]
    retries = daemon.get("runRetries") or {}
    if daemon.get("enabled") and retries.get("enabled"):
        instance["run_retries"] = {"enabled": True}
        if retries.get("maxRetries"):
            instance["run_retries"]["max_retries"] = retries["maxRetries"]
    for section in ("sensors", "schedules"):
        threads = daemon.get(section) or {}
        if daemon.get("enabled") and threads.get("useThreads"):
            instance[section] = {"use_threads": True}
            if threads.get("numWorkers"):
                instance[section]["num_workers"] = threads["numWorkers"]
            if threads.get("numSubmitWorkers"):
                instance[section]["num_submit_workers"] = threads["numSubmitWorkers"]
    instance["telemetry"] = {"enabled": bool(values.get("telemetry", {}).get("enabled", True))}
    return instance

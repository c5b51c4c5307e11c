"""deploy/prometheus/ and deploy/grafana/: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`), every alert is tested firing and quiet, every runbook_url names a runbook in
docs/runbooks/, the rules and the dashboard name only the agreed metrics, and a real Prometheus loads the
example scrape config, scrapes the API with it, evaluates every rule and runs every dashboard query."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from domain.core.models import QueueState, Tenant
from domain.core.store import transaction
from domain.queue import queue
from tests.servers import Processes, free_port, until

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yaml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "wrk-orchestration.json"
RUNBOOK_BASE = "https://runbooks.wrk.example/"  # the placeholder alerts.yaml's header says how to change

# The metric families the API exposes (the agreed names: docs/operations.md#metrics), by type. A counter's
# series ends in _total; a histogram's in _bucket, _sum and _count.
METRICS = {
    "wrk_queue_depth": "gauge",
    "wrk_queue_oldest_available_age_seconds": "gauge",
    "wrk_queue_oldest_launched_age_seconds": "gauge",
    "wrk_phase_transitions": "counter",
    "wrk_phase_duration_seconds": "histogram",
    "wrk_phase_latency_seconds": "histogram",
    "wrk_live_connections": "gauge",
    "wrk_http_requests": "counter",
    "wrk_http_request_duration_seconds": "histogram",
    "wrk_http_requests_in_flight": "gauge",
    "wrk_builds": "counter",
    "wrk_build_duration_seconds": "histogram",
    "wrk_deploy_actions": "counter",
    "wrk_deploy_compensations": "counter",
    "wrk_deploy_reconciliation_acts": "counter",
    "wrk_deploy_drift": "counter",
    "wrk_releases": "counter",
    "wrk_release_repository_builds": "counter",
    "wrk_release_duration_seconds": "histogram",
    "wrk_workflow_executions": "gauge",
    "wrk_workflow_executions_finished": "counter",
    "wrk_workflow_step_retries": "counter",
    "wrk_approvals": "counter",
    "wrk_approval_decision_seconds": "histogram",
    "wrk_approvals_pending": "gauge",
    "wrk_approvals_expiring_soon": "gauge",
    "wrk_batch_messages_published": "counter",
    "wrk_batch_messages_pending": "gauge",
    "wrk_batch_oldest_pending_age_seconds": "gauge",
    "wrk_outbox_messages": "gauge",
    "wrk_outbox_oldest_pending_age_seconds": "gauge",
    "wrk_triggers_dead": "counter",
}
SUFFIXES = {"gauge": [""], "counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
SERIES = {name + suffix for name, kind in METRICS.items() for suffix in SUFFIXES[kind]}
PROMETHEUS_OWN = {"up"}  # series Prometheus makes for each target
# The dashboard's flows, one row each, in order.
ROWS = [
    "HTTP API",
    "Queue and dead triggers",
    "Builds",
    "Deploys",
    "Releases",
    "Workflows and approvals",
    "Batch jobs",
    "Outbox (notifications and callbacks)",
    "Phases",
]
# Grafana's own variables, given a value so the expression parses as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m"}


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, from scripts/ensure-promtool (`make test` runs it first: it installs Debian's prometheus
    package when missing and running as root)."""
    found = subprocess.run([ROOT / "scripts" / "ensure-promtool"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(found.stderr.strip())
    return found.stdout.strip()


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _panels() -> list[dict[str, Any]]:
    return json.loads(DASHBOARD.read_text())["panels"]


def _series(expr: str) -> set[str]:
    """The metric names an expression selects (parsed as PromQL, not matched as text)."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, promql_parser.VectorSelector):
            yield node.name
            return
        for child in ("lhs", "rhs", "expr", "param", "vector_selector"):
            value = getattr(node, child, None)
            if isinstance(value, promql_parser.Expr):
                yield from walk(value)
        for arg in getattr(node, "args", None) or []:
            yield from walk(arg)

    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return set(walk(promql_parser.parse(expr)))


def kill_a_phase_trigger(engine: Any) -> None:
    """One phase trigger enqueued, claimed and failed for good: dead."""
    tenant_id = str(uuid.uuid4())
    with transaction(engine) as session:
        session.add(Tenant(id=tenant_id, name=f"alerts-{tenant_id[:8]}"))
        session.flush()
        payload = {"tenant_id": tenant_id, "user_id": "u", "sync_id": "s", "phase": 1}
        queue.enqueue(session, "phase", tenant_id, payload, dedup_key=f"alerts:{tenant_id}")
    with transaction(engine) as session:
        (claimed,) = queue.claim(session, ["phase"], 1, 60, "alerts-test")
        assert queue.fail(session, claimed.id, claimed.claim_token, "boom", retryable=False) == QueueState.DEAD


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=PROMETHEUS)


def test_promtool_accepts_the_rules_and_the_scrape_config(promtool):
    rules = _run(promtool, "check", "rules", ALERTS)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run(promtool, "check", "config", SCRAPE_CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_alerts_unit_tests_pass(promtool):
    result = _run(promtool, "test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_broken_rule_and_an_alert_that_no_longer_fires(promtool, tmp_path):
    """The two checks bite: a rule that does not parse, and a threshold its unit test contradicts."""
    text = ALERTS.read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("max by (kind) (increase(wrk_triggers_dead_total[30m]))", "max by (kind) (", 1))
    assert _run(promtool, "check", "rules", broken).returncode != 0

    raised = text.replace(
        "max by (kind) (wrk_queue_oldest_available_age_seconds) > 600",
        "max by (kind) (wrk_queue_oldest_available_age_seconds) > 6000",
    )
    assert raised != text
    (tmp_path / "alerts.yaml").write_text(raised)
    unit_tests = yaml.safe_load(ALERTS_TEST.read_text())  # only the backlog's case: the others take seconds
    unit_tests["tests"] = [
        case for case in unit_tests["tests"] if {c["alertname"] for c in case["alert_rule_test"]} == {"WrkQueueBacklog"}
    ]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(unit_tests))
    assert _run(promtool, "test", "rules", tmp_path / "alerts_test.yaml").returncode != 0
    (tmp_path / "alerts.yaml").write_text(text)
    assert _run(promtool, "test", "rules", tmp_path / "alerts_test.yaml").returncode == 0


def test_every_alert_is_unit_tested_firing_and_quiet():
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - fires == set()
    assert alerts - quiet == set()


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_in_the_repository():
    missing: list[str] = []
    for rule in _rules():
        annotations = rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
            missing.append(f"{rule['alert']}: severity")
        missing += [f"{rule['alert']}: {key}" for key in ("summary", "description") if not annotations.get(key)]
        url = annotations.get("runbook_url", "")
        path = url.removeprefix(RUNBOOK_BASE)
        if not (url.startswith(RUNBOOK_BASE) and path.startswith("docs/runbooks/") and (ROOT / path).is_file()):
            missing.append(f"{rule['alert']}: runbook {url!r}")
    assert missing == []


def test_the_rules_and_the_dashboard_name_only_the_agreed_metrics():
    used = {f"alert {rule['alert']}": _series(rule["expr"]) for rule in _rules()}
    for panel in _panels():
        for target in panel.get("targets", []):
            used[f"panel {panel['title']!r} {target['refId']}"] = _series(target["expr"])
    known = SERIES | PROMETHEUS_OWN
    assert {where: names - known for where, names in used.items() if names - known} == {}
    assert all(used.values())  # every expression selects something: the parse found its names


def test_a_renamed_metric_is_caught():
    assert _series("max(wrk_deploy_drift_total)") <= SERIES
    assert not _series("max(wrk_deploy_drifts_total)") <= SERIES


def test_the_dashboard_has_a_row_per_flow_over_a_prometheus_input():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"] if i["pluginId"] == "prometheus"] == ["DS_PROMETHEUS"]
    panels = dashboard["panels"]
    assert [p["title"] for p in panels if p["type"] == "row"] == ROWS
    per_row: dict[str, int] = {}
    row = ""
    for panel in panels:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        per_row[row] = per_row.get(row, 0) + 1
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for s in sources), panel["title"]
    assert sorted(per_row) == sorted(ROWS)
    assert len({p["id"] for p in panels}) == len(panels)


def test_the_api_exposes_every_agreed_metric_under_its_type(database_url):
    """The other side of the names the rules and the dashboard use: a metric renamed or retyped in the
    API fails here. Requests first, so the HTTP figures (made by the requests) have values."""
    processes = Processes({"DATABASE_URL": database_url, "ENVIRONMENT": "test"})
    try:
        api = processes.uvicorn("api.app:create_app")
        for path in ("/health", "/metrics", "/v1/no-such-route"):
            httpx.get(api + path, timeout=30)
        exposition = httpx.get(api + "/metrics", timeout=30)
    finally:
        processes.stop()
    assert exposition.status_code == 200, exposition.text
    exposed = {family.name: family.type for family in text_string_to_metric_families(exposition.text)}
    assert {name: exposed.get(name) for name in METRICS} == METRICS


def test_a_real_prometheus_scrapes_the_api_with_the_example_config_and_evaluates_every_rule(
    promtool, engine, database_url, tmp_path
):
    """The example config as shipped, but for the test API's port and a 1 s interval: the scrape is
    allowed (loopback, no METRICS_TOKEN), the series carry the config's job and the batch figures their
    own, every rule's expression evaluates without error against what the API serves, a trigger that
    goes dead fires WrkTriggersDead, and Prometheus runs every dashboard query."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    processes = Processes({"DATABASE_URL": database_url, "ENVIRONMENT": "test"})
    try:
        api = processes.uvicorn("api.app:create_app")
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERTS)]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [api.removeprefix("http://")]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        # The server of the same package as promtool (Debian's prometheus), else the one on PATH.
        server = shutil.which("prometheus", path=str(Path(promtool).parent)) or shutil.which("prometheus")
        assert server, "no prometheus server beside promtool or on PATH (Debian's prometheus package has both)"
        processes.spawn(
            server,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        )
        prometheus = f"http://127.0.0.1:{port}/api/v1"

        def query(expr: str) -> list[dict[str, Any]]:
            try:
                answer = httpx.get(f"{prometheus}/query", params={"query": expr}, timeout=30).json()
            except (httpx.HTTPError, ValueError):
                return []
            return answer["data"]["result"]

        up = until(lambda: query('up{job="wrk-orchestration"} == 1'), "the API's target is not up")
        assert up[0]["metric"]["instance"] == api.removeprefix("http://")
        depth = until(lambda: query("wrk_queue_depth"), "no wrk_queue_depth scraped")
        assert {s["metric"]["job"] for s in depth} == {"wrk-orchestration"}

        def rules() -> list[dict[str, Any]]:
            try:
                groups = httpx.get(f"{prometheus}/rules", timeout=30).json()["data"]["groups"]
            except (httpx.HTTPError, ValueError):
                return []
            found = [rule for group in groups for rule in group["rules"]]
            return found if found and all(rule["health"] != "unknown" for rule in found) else []

        evaluated = until(rules, "the rules were not all evaluated")
        # Scraped with the queue depth (one scrape has every family): asked once, no waiting.
        batch = query('wrk_batch_messages_pending{job="model-monitoring"}')
        assert [s["metric"]["job"] for s in batch] == ["model-monitoring"]  # honor_labels: not exported_job
        assert query('wrk_triggers_dead_total{kind="phase"} == 0')

        kill_a_phase_trigger(engine)
        firing = 'ALERTS{alertname="WrkTriggersDead", alertstate="firing"}'
        dead = until(lambda: query(firing), "WrkTriggersDead did not fire for the dead trigger")
        assert [(a["metric"]["kind"], a["metric"]["severity"]) for a in dead] == [("phase", "critical")]
        refused = {}
        for panel in _panels():
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "1m")
                answer = httpx.get(f"{prometheus}/query", params={"query": expr}, timeout=30).json()
                if answer["status"] != "success":
                    refused[f"{panel['title']} {target['refId']}"] = answer.get("error")
    finally:
        processes.stop()
    assert sorted(rule["name"] for rule in evaluated) == sorted(rule["alert"] for rule in _rules())
    assert {rule["name"]: rule.get("lastError", "") for rule in evaluated if rule["health"] != "ok"} == {}
    assert refused == {}  # every dashboard query is one Prometheus runs

"""The runbooks say only what exists: every statement of every ```sql block under docs/runbooks/ executes
on a migrated store, on SQLite and PostgreSQL (PostgreSQL's own views only there); every `wrk-orch`
command of their shell blocks parses; every API route they name is one the API serves; every Dagster job,
sensor and schedule they name is in the code location."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.app import ENDPOINTS
from tests.cli.parsing import accepted

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
SQL_BLOCK = re.compile(r"^\s*```sql\n(.*?)^\s*```", re.M | re.S)
SH_BLOCK = re.compile(r"^\s*```sh\n(.*?)^\s*```", re.M | re.S)
POSTGRES_ONLY = ("pg_stat_activity",)
# "GET /v1/queue/stats" in prose, or a curl of "$API/v1/queue/stats" (GET unless -X says otherwise).
API_CALL = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) `?(/[\w/{}$.-]*)")
CURL_API = re.compile(r"\$API(/[\w/{}$.-]*)")
# `x_sensor`, `x_schedule`, `x_job`, and the jobs named as such ("job `x`", "jobs `x` and `y`", "launch `x`").
DAGSTER_NAME = re.compile(
    r"`([a-z][a-z0-9_]*_(?:sensor|schedule|job))`|(?:\bjobs?|\blaunch(?:es)?) `([a-z_]+)`(?: and `([a-z_]+)`)?"
)


def _statements() -> list[tuple[str, str]]:
    found = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for block in SQL_BLOCK.findall(page.read_text()):
            code = "\n".join(re.sub(r"--.*$", "", line) for line in block.splitlines())
            found += [(page.name, s.strip()) for s in code.split(";") if s.strip()]
    return found


def test_the_runbooks_have_sql():
    assert len({page for page, _ in _statements()}) >= 8


def test_every_runbook_query_runs_on_the_store(engine, backend):
    failed = {}
    for page, statement in _statements():
        if backend != "postgresql" and any(view in statement for view in POSTGRES_ONLY):
            continue
        try:
            with engine.connect() as conn:
                conn.execute(text(statement)).fetchall()
        except SQLAlchemyError as exc:
            failed[f"{page}: {statement[:60]}"] = str(exc).splitlines()[0]
    assert failed == {}


def _shell_lines() -> list[tuple[str, str]]:
    """Every line of every ```sh block, continuation lines joined."""
    lines = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for block in SH_BLOCK.findall(page.read_text()):
            lines += [(page.name, line.strip()) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def test_every_wrk_orch_command_of_the_runbooks_exists():
    commands = [
        (page, line.split("wrk-orch", 1)[1].split("#")[0].split("|")[0])
        for page, line in _shell_lines()
        if "wrk-orch " in line
    ]
    assert commands
    refused = {}
    for page, command in commands:
        # A shell variable stands for a value: 1 fits every argument (an id, a number, a name).
        args = shlex.split(re.sub(r"\$[A-Z_]+", "1", command.replace("$(", "").replace(")", "")))
        if not accepted(args):
            refused[page] = command
    assert refused == {}


def test_every_api_route_the_runbooks_name_exists():
    routes = {(e.method, re.sub(r"\{[^}]+\}", "{}", e.path)) for e in ENDPOINTS}
    named = set()
    for page in sorted(RUNBOOKS.glob("*.md")):
        calls = API_CALL.findall(page.read_text())
        for _, line in (item for item in _shell_lines() if item[0] == page.name):
            method = re.search(r"-X (\w+)", line)
            calls += [(method.group(1) if method else "GET", path) for path in CURL_API.findall(line)]
        for method, path in calls:
            if not path.startswith("/_sandbox"):  # the sandbox's own control routes, not the API's
                named.add((page.name, method, re.sub(r"\{[^}]+\}|\$[A-Z_]+", "{}", path.split("?")[0])))
    assert len(named) >= 10
    assert {(page, method, path) for page, method, path in named if (method, path) not in routes} == set()


def test_every_dagster_job_sensor_and_schedule_the_runbooks_name_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    from orchestration_defs.definitions import defs  # here: the other runbook checks need no Dagster

    repository = defs.get_repository_def()
    known = {job.name for job in repository.get_all_jobs()}
    known |= {sensor.name for sensor in repository.sensor_defs} | {s.name for s in repository.schedule_defs}
    named: set[tuple[str, str]] = set()
    for page in sorted(RUNBOOKS.glob("*.md")):
        for match in DAGSTER_NAME.finditer(page.read_text()):
            named |= {(page.name, name) for name in match.groups() if name}
    assert len(named) >= 20
    assert {(page, name) for page, name in named if name not in known} == set()


def test_every_runbook_is_linked_from_the_operations_page_the_docs_index_and_the_runbooks_index():
    pages = {
        "operations.md": ("runbooks/", (ROOT / "docs" / "operations.md").read_text()),
        "README.md": ("runbooks/", (ROOT / "docs" / "README.md").read_text()),
        "runbooks/README.md": ("", (RUNBOOKS / "README.md").read_text()),
    }
    runbooks = [page.name for page in sorted(RUNBOOKS.glob("*.md")) if page.name != "README.md"]
    assert len(runbooks) >= 7
    unlinked = {
        where: [r for r in runbooks if f"]({prefix}{r})" not in text] for where, (prefix, text) in pages.items()
    }
    assert unlinked == {where: [] for where in pages}

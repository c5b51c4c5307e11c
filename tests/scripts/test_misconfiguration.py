"""A misconfiguration ends `make run`, `wrk-orch` and the code server with one line naming the setting, its
masked value and what is expected, and exit status 2: no traceback, no restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BAD_CRON = {"BATCH_OUTCOME_SYNC_CRON": "61 * * * *"}
BAD_DATABASE_URL = {"DATABASE_URL": "nonsense://wrk:db-password-not-shown@db.example/wrk"}
# The production guard: every development default and sandbox setting named, none of their values.
UNSAFE_PRODUCTION = {"ENVIRONMENT": "production", "GITHUB_TOKEN": "ghp_real_token_not_shown"}
CASES = {
    "bad cron": (BAD_CRON, "BATCH_OUTCOME_SYNC_CRON='61 * * * *': expected five fields: minute (0-59)"),
    "bad DATABASE_URL": (
        BAD_DATABASE_URL,
        "DATABASE_URL='nonsense://wrk:***@db.example/wrk': expected a database URL SQLAlchemy can open",
    ),
    "unsafe production setting": (
        UNSAFE_PRODUCTION,
        "ENVIRONMENT=production refuses the development defaults or the sandbox in: ",
    ),
}
SECRETS = ("db-password-not-shown", "ghp_real_token_not_shown")


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENVIRONMENT", "GITHUB_TOKEN")}
    return {
        **env,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "LOG_DIR": str(tmp_path / "logs"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'wrk.db'}",
        "DAGSTER_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "SANDBOX_PORT": str(free_port()),
        "DAGSTER_GRPC_PORT": str(free_port()),
        "SMTP_PORT": str(free_port()),
        **settings,
    }


def _assert_one_clear_line(output: str, prefix: str, expected: str) -> None:
    assert "Traceback" not in output and "ValidationError" not in output
    assert not any(secret in output for secret in SECRETS)
    [line] = [line for line in output.splitlines() if "configuration:" in line]
    assert line.startswith(f"{prefix}: configuration: ") and expected in line


@pytest.mark.xdist_group("make_run")
@pytest.mark.parametrize("case", CASES)
def test_make_run_ends_with_one_line_and_exit_2(case, tmp_path):
    settings, expected = CASES[case]
    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=_env(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=600,  # generous: the bound of interest (10 s) is measured, not asserted
    )
    seconds = time.monotonic() - started
    print(f"make run with a {case}: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 2, done.stdout + done.stderr
    _assert_one_clear_line(done.stdout + done.stderr, "run", expected)
    assert "started" not in done.stdout  # nothing was started
    if case == "unsafe production setting":
        assert "GITHUB_TOKEN" not in done.stderr  # a real value is accepted, and not shown either
        assert "JWT_SECRET, GITHUB_WEBHOOK_SECRET, HITL_LINK_SECRET" in done.stderr


@pytest.mark.parametrize("case", CASES)
def test_wrk_orch_ends_with_one_line_and_exit_2(case, tmp_path):
    settings, expected = CASES[case]
    done = subprocess.run(
        [str(BIN / "wrk-orch"), "queue", "stats"], env=_env(tmp_path, **settings), capture_output=True, text=True
    )
    assert done.returncode == 2
    _assert_one_clear_line(done.stderr, "wrk-orch", expected)
    assert done.stderr.count("\n") == 1


def test_the_code_server_exits_2_with_one_line_on_a_bad_cron(tmp_path):
    env = _env(tmp_path, **BAD_CRON)
    done = subprocess.run(
        [
            str(BIN / "dagster"), "api", "grpc", "-m", "orchestration_defs.definitions", "-a", "defs",
            "--location-name", "wrk_orchestration", "-h", "127.0.0.1", "-p", env["DAGSTER_GRPC_PORT"],
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    _assert_one_clear_line(done.stderr, "code location", CASES["bad cron"][1])

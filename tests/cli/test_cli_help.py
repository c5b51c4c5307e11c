"""`wrk-orch` as a command line: --version, examples in every command's help, usage errors exit 2, an
API that cannot be reached exits 6, a refusal is one line on stderr without the token."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from cli.main import app, command
from tests.servers import free_port

runner = CliRunner()


def _commands(cmd, path=()):
    """Every command's path, groups included (the hidden `deploy change` is the `deploy VERSION` form)."""
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, (*path, name))


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"wrk-orch {version('wrk-orchestration')}"


def test_every_command_and_group_help_shows_examples():
    paths = list(_commands(command))
    assert len(paths) >= 25
    missing = []
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Examples:" not in result.stdout or "wrk-orch" not in result.stdout.split("Examples:", 1)[1]:
            missing.append(" ".join(path))
    assert missing == []


@pytest.mark.parametrize(
    "args",
    [
        ["nonsense"],
        ["deploy", "x", "--status", "Bogus"],
        ["queue", "show", "not-a-number"],
        ["release", "status", "v1", "--interval", "0"],
        ["approvals", "decide", "a1"],  # neither --approve nor --reject
        ["approvals", "decide", "a1", "--approve", "--reject"],
        ["approvals", "decide", "a1", "--approve", "--field", "no-equals-sign"],
    ],
)
def test_a_usage_error_exits_2(args):
    result = runner.invoke(app, [*args, "--api", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 2, result.output


def test_an_unreachable_api_exits_6_with_one_line_and_never_the_token():
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["release", "list", "--api", url, "--token", "secret-token-5d1e"])
    assert result.exit_code == 6
    assert result.stderr.count("\n") == 1 and url in result.stderr and "secret-token-5d1e" not in result.output

"""The layers' import contracts (pyproject's [tool.importlinter]) hold, and a breach fails them: a module of
the domain that imports Dagster makes `lint-imports`, which `make test` runs first, exit non-zero."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("domain", "cli", "api", "resources", "orchestration_defs", "sensors", "schedules", "wrk_instance")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def copy_of_the_code(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_layers_contracts_hold(tmp_path):
    result = lint_imports(copy_of_the_code(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def test_a_domain_module_importing_dagster_breaks_the_contracts(tmp_path):
    tree = copy_of_the_code(tmp_path)
    (tree / "domain" / "core" / "breach.py").write_text("import dagster\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "domain.core.breach -> dagster" in result.stdout, result.stdout


def test_a_flow_importing_another_flow_above_it_breaks_the_contracts(tmp_path):
    tree = copy_of_the_code(tmp_path)
    (tree / "domain" / "core" / "breach.py").write_text("from domain.deploy import saga\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "domain.core.breach -> domain.deploy.saga" in result.stdout, result.stdout

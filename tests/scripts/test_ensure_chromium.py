"""scripts/ensure-chromium: finds the browser tests' Chromium quietly, says where with -v, and only
looks with -n (the install path, apt-get as root, is what `make test` exercises on a fresh machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "ensure-chromium")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("WRK_CHROMIUM", "CHROMIUM_LIBDIR")}
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env={**clean, **env})


def test_found_in_its_folder_it_prints_nothing_unless_asked(tmp_path):
    binary = tmp_path / "chromium"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    quiet = run(CHROMIUM_LIBDIR=str(tmp_path))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    told = run("--verbose", CHROMIUM_LIBDIR=str(tmp_path))
    assert (told.returncode, told.stdout) == (0, f"{binary}\n")


def test_wrk_chromium_names_the_binary_and_a_wrong_one_is_an_error(tmp_path):
    binary = tmp_path / "my-chromium"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert run("-v", WRK_CHROMIUM=str(binary), CHROMIUM_LIBDIR=str(tmp_path / "none")).stdout == f"{binary}\n"
    wrong = run("-n", WRK_CHROMIUM=str(tmp_path / "missing"))
    assert wrong.returncode == 2 and "WRK_CHROMIUM" in wrong.stderr


def test_only_looking_it_reports_a_missing_chromium_and_installs_nothing(tmp_path):
    missing = run("--no-install", "--verbose", CHROMIUM_LIBDIR=str(tmp_path))
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "")

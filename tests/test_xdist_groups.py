"""`--dist loadgroup` (make test) keeps the tests of one `xdist_group` on one worker: the tests that
share a stack, a broker or `make run`'s ports rely on it, and a pytest that xdist cannot group under
ignores the marks without a word."""

from __future__ import annotations

import re
import subprocess
import sys

MODULE = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("n", range(3))
def test_ran(n):
    with open("workers.txt", "a") as out:
        out.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_one_group_runs_on_one_worker(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name in ("test_first.py", "test_second.py"):  # two modules: without the group, two work units
        (tmp_path / name).write_text(MODULE)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-v"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert len(re.findall(r"PASSED \S+\]@together", ran.stdout)) == 6, ran.stdout[-3000:]  # the group in each id
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, workers

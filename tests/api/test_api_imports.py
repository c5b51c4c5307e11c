"""The HTTP API uses the plain clients: importing it loads no Dagster (hundreds of thousands of objects and
a second or more of start-up that an API process never uses)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_api_loads_no_dagster_module():
    script = (
        "import api.app, json, sys; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster'))))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []

"""The code location too, for the warm run launcher's fork server (orchestration_defs/launcher.py), which
restarts it when the project's code changes. A code location that fails to import is not an error here:
the run worker imports it again and reports the error in the run, as Dagster's own launcher does."""

import contextlib

import orchestration_defs.preload

with contextlib.suppress(Exception):
    import orchestration_defs.definitions  # noqa: F401

"""Where a step's stdout and stderr go: Dagster's LocalComputeLogManager (the same files under
$DAGSTER_HOME/storage, the same stdout/stderr views in the UI), without also echoing them to the worker's
console. Dagster's echo starts a `tail -F` and a Python watcher process for each stream: four
processes per step, whose start and stop lengthen every step and whose CPU competes with the steps.
Under `make run` that console is the daemon's log, which no one reads for a step's output.

Importable without the code location (the daemon and the webserver load it from the instance config).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import Field, Float, StringSource
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.instance.ref import compute_logs_directory
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file


class StepLogFiles(LocalComputeLogManager):
    """LocalComputeLogManager writing captured output to its files only. `base_dir` is optional: by
    default the instance's own folder for it ($DAGSTER_HOME/storage, as Dagster's default)."""

    def __init__(
        self,
        base_dir: str | None = None,
        polling_timeout: float | None = None,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        super().__init__(base_dir or "", polling_timeout, inst_data)

    @property
    def _base_dir(self) -> str:
        if self._configured_dir:
            return self._configured_dir
        return compute_logs_directory(self._instance.root_directory)

    @_base_dir.setter
    def _base_dir(self, value: str) -> None:
        self._configured_dir = value

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False), "polling_timeout": Field(Float, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> StepLogFiles:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        outpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        errpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(outpath)
        ensure_file(errpath)
        with redirect_to_file(sys.stdout, outpath), redirect_to_file(sys.stderr, errpath):
            yield CapturedLogContext(log_key)
        # as Dagster's: the artifact that says the capture is complete
        touch_file(self.complete_artifact_path(log_key))  # type: ignore[no-untyped-call]  # unannotated in Dagster

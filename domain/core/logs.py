"""One logging setup for every process: one line per record, JSON by default (LOG_FORMAT=text for reading by
eye), with one field set: `time` (ISO 8601, UTC), `level`, `service`, `message`, and `request_id` or
`run_id` when there is one; a record's other fields follow. No colour codes: the lines go to files.

structlog renders the lines (the library Dagster's own `--log-format json` uses); `configure` routes the
standard library's records (ours, uvicorn's, httpx's) through it. Lines a process writes without logging
(a library's print, a crash's traceback, Dagster's processes) are put in the same shape by `relayed_line`,
which `make run`'s supervisor applies to everything its services write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import MutableMapping
from datetime import datetime
from typing import IO, Any, Literal

import structlog

LogFormat = Literal["json", "text"]
FIELDS = ("time", "level", "service", "message")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Record attributes that are no field of a line: Dagster's event metadata (its run id is taken out first),
# uvicorn's coloured copy of the message.
DROPPED = ("dagster_meta", "color_message")
# The daemon's lines for every sensor evaluation that launches nothing (about one a second per sensor):
# DEBUG, not INFO. What a tick does (a launch, a failure) stays at its level.
SENSOR_TICK = re.compile(r"^(Checking for new runs for sensor: |Sensor \S+ skipped: |No run requests returned for )")


def plain(text: str) -> str:
    """`text` without terminal colour codes."""
    return ANSI.sub("", text)


def _in_field_order(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    meta = getattr(record, "dagster_meta", None)
    if isinstance(meta, dict) and meta.get("run_id") and "run_id" not in event:
        event["run_id"] = meta["run_id"]
    for name in DROPPED:
        event.pop(name, None)
    if isinstance(event.get("message"), str):
        event["message"] = plain(event["message"])
    ordered = {name: event.pop(name) for name in FIELDS if name in event}
    ordered.update(event)
    return ordered


def _with_service(service: str) -> structlog.types.Processor:
    def add(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        return event

    return add


def formatter(service: str, log_format: LogFormat = "json") -> logging.Formatter:
    """The formatter of every handler: the field set above, rendered as JSON or as plain text."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(default=str)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,  # the API's request_id, bound per request
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.stdlib.ExtraAdder(),
            _with_service(service),
        ],
        processors=[
            structlog.processors.format_exc_info,  # a traceback is one field of one line
            structlog.processors.EventRenamer("message"),
            _in_field_order,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (and replaces when called again; other handlers stay). Without a
    stream it writes to whatever `sys.stderr` is at the time (a test runner swaps it per test)."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self.follows_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self.follows_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure(service: str, level: str = "INFO", log_format: LogFormat = "json", stream: IO[str] | None = None) -> None:
    """Send every record of this process, uvicorn's included, to one handler on `stream` (stderr)."""
    handler = _LineHandler(stream)
    handler.setFormatter(formatter(service, log_format))
    handler.setLevel(level.upper())  # the lowest level written, whatever a library sets on its loggers
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LineHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)  # uvicorn's own handlers print its text format
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The API's middleware writes one access line per request (with its request id and tenant): not uvicorn's.
    logging.getLogger("uvicorn.access").handlers.clear()
    logging.getLogger("uvicorn.access").propagate = False
    logging.getLogger("httpx").setLevel(logging.WARNING)  # outbound calls are logged by the clients' retries
    logging.captureWarnings(True)


def relayed_record(service: str, line: str, level: str = "info") -> logging.LogRecord:
    """A record for one line a service wrote, for `formatter`: a JSON object keeps its fields (Dagster's
    `event` and `timestamp` named as ours); a line in Dagster's or uvicorn's text format keeps its time,
    level and logger (and a run id it names); any other text is the message of a record at `level`."""
    text = plain(line.rstrip("\r\n"))
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        fields = _text_fields(text)
    message = next((fields.pop(k) for k in ("message", "event", "msg") if k in fields), "")
    for key in ("timestamp", "asctime"):
        if key in fields:
            fields.setdefault("time", fields.pop(key))
    levelname = str(fields.pop("level", None) or fields.pop("levelname", None) or level).upper()
    levelname = {"WARN": "WARNING", "FATAL": "CRITICAL", "TRACE": "DEBUG"}.get(levelname, levelname)
    levelno = logging.getLevelName(levelname)
    if not isinstance(levelno, int):
        levelname, levelno = "INFO", logging.INFO
    fields.setdefault("service", service)
    run_id = RUN_ID.search(str(message))
    if run_id and "run_id" not in fields and str(fields.get("logger") or service).startswith("dagster"):
        fields["run_id"] = run_id.group(0)  # Dagster's lines name the run they are about in the message
    record = logging.makeLogRecord({"name": str(fields.pop("logger", None) or service), "msg": str(message)})
    record.levelname, record.levelno = levelname, levelno
    for name, value in fields.items():
        if name not in RECORD_ATTRIBUTES:
            setattr(record, name, value)
    return record


RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Dagster's text log format ("%(asctime)s - %(name)s - %(levelname)s - %(message)s"), and uvicorn's
# ("INFO:     Started server process [1]") where the process logs before the project's setup.
DAGSTER_TEXT = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d+)? ?[+-]?\d{0,4}) - (?P<logger>[\w.\-]+) - "
    r"(?P<level>[A-Z]+) - (?P<message>.*)$",
    re.DOTALL,  # a record with its continuation lines (a traceback) is one message
)
UVICORN_TEXT = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+(?P<message>.*)$", re.DOTALL)
RUN_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def _text_fields(text: str) -> dict[str, Any]:
    match = DAGSTER_TEXT.match(text)
    if match:
        fields: dict[str, Any] = match.groupdict()
        with contextlib.suppress(ValueError):
            fields["time"] = datetime.strptime(fields["time"], "%Y-%m-%d %H:%M:%S %z").isoformat()
        return fields
    match = UVICORN_TEXT.match(text)
    return match.groupdict() if match else {"message": text}


class SensorTicksAtDebug(logging.Filter):
    """Puts the daemon's per-evaluation sensor line at DEBUG, where a handler at INFO drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and SENSOR_TICK.match(str(record.msg)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_sensor_ticks() -> None:
    """Install SensorTicksAtDebug on the Dagster daemon's sensor logger (once per process)."""
    sensor_logger = logging.getLogger("dagster.daemon.SensorDaemon")
    if not any(isinstance(f, SensorTicksAtDebug) for f in sensor_logger.filters):
        sensor_logger.addFilter(SensorTicksAtDebug())

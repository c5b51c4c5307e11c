"""The one log line shape (domain/core/logs.py): the field set, ids, no colour codes, sensor ticks at DEBUG."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from domain.core import logs


@pytest.fixture(autouse=True)
def _root_logger_restored():
    root, dagster = logging.getLogger(), logging.getLogger("dagster")
    handlers, level, dagster_level = list(root.handlers), root.level, dagster.level
    dagster.setLevel(logging.NOTSET)  # as the daemon leaves it (other tests in this process may set it)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    dagster.setLevel(dagster_level)


def _configured(level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    logs.configure("api", level, "json", stream)
    return stream


def test_a_record_is_one_json_line_with_the_field_set_and_the_request_id_bound_for_the_request():
    stream = _configured()
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        logging.getLogger("wrk.api").warning("refused %s", "x", extra={"color_message": "\x1b[31mrefused", "n": 1})
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("wrk.api").exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first)[:4] == ["time", "level", "service", "message"]
    assert first["message"] == "refused x" and first["level"] == "warning" and first["service"] == "api"
    assert first["request_id"] == "req-1" and first["n"] == 1 and "color_message" not in first
    assert second["message"] == "failed" and "ValueError: boom" in second["exception"] and "request_id" not in second


def test_the_text_format_is_plain_text():
    stream = io.StringIO()
    logs.configure("api", "INFO", "text", stream)
    logging.getLogger("wrk.api").info("hello")
    line = stream.getvalue()
    assert "hello" in line and "\x1b" not in line and not line.startswith("{")


def test_the_daemons_per_tick_sensor_lines_are_at_debug_and_a_launch_stays_at_info():
    stream = _configured("INFO")
    logs.quiet_sensor_ticks()
    daemon = logging.getLogger("dagster.daemon.SensorDaemon")
    daemon.info("Checking for new runs for sensor: build_queue_sensor")
    daemon.info("Sensor phase_queue_sensor skipped: no phase triggers are due")
    daemon.info("Launching run for build_queue_sensor")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "Launching run for build_queue_sensor"
    ]
    stream = _configured("DEBUG")
    daemon.info("Checking for new runs for sensor: build_queue_sensor")
    [tick] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert tick["level"] == "debug"


def test_a_relayed_line_takes_the_field_set_from_dagster_json_dagster_text_or_plain_text():
    line = logs.formatter("dagster-daemon")
    dagster_json = json.loads(
        line.format(logs.relayed_record("dagster-daemon", '{"event": "Serving", "level": "info", "timestamp": "T"}'))
    )
    assert dagster_json == {
        "time": "T", "level": "info", "service": "dagster-daemon", "message": "Serving", "logger": "dagster-daemon",
    }  # fmt: skip
    text = "\x1b[32m2026-12-07 06:37:36 +0000\x1b[0m - dagster - DEBUG - job - 7e9209e6-107e-4ead-861d-a76c30f79216 - x"
    worker = json.loads(line.format(logs.relayed_record("dagster-daemon", text)))
    assert worker["level"] == "debug" and worker["run_id"] == "7e9209e6-107e-4ead-861d-a76c30f79216"
    assert worker["time"] == "2026-12-07T06:37:36+00:00" and worker["logger"] == "dagster"
    daemon = '{"event": "Checking run 7e9209e6-107e-4ead-861d-a76c30f79216", "logger": "dagster.daemon"}'
    assert json.loads(line.format(logs.relayed_record("dagster-daemon", daemon)))["run_id"] == worker["run_id"]
    api = '{"message": "GET /v1/automation-versions/7e9209e6-107e-4ead-861d-a76c30f79216 200", "logger": "wrk.api"}'
    assert "run_id" not in json.loads(line.format(logs.relayed_record("api", api)))
    plain = json.loads(line.format(logs.relayed_record("api", "Traceback (most recent call last):", "warning")))
    assert plain["level"] == "warning" and plain["service"] == "api" and plain["message"].startswith("Traceback")

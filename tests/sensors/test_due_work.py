"""The due-work sensor factory: one run, tagged with what is due, when some is due and none is in flight;
otherwise it says why it waits."""

from __future__ import annotations

import dagster as dg
import pytest

from sensors.due_work import due_work_sensor, runs_in_flight


@dg.op
def _work() -> None:
    pass


@dg.job
def chores() -> None:
    _work()


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def _sensor(due: dict[str, int], idle: str | None = None) -> dg.SensorDefinition:
    return due_work_sensor(
        chores,
        lambda _resources: due,
        name="chores_sensor",
        description="chores when due",
        minimum_interval_seconds=30,
        busy="chores are being done",
        nothing_due="no chores",
        idle=(lambda _resources: idle) if idle else None,
        resource_keys=frozenset(),
    )


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance) -> dg.SensorResult:
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, sensor_name=sensor.name))


def test_work_due_launches_one_run_tagged_with_what_is_due(instance):
    sensor = _sensor({"wrk/chores": 3, "wrk/errands": 0})
    [request] = _tick(sensor, instance).run_requests
    assert {k: v for k, v in request.tags.items() if k.startswith("wrk/")} == {"wrk/chores": "3", "wrk/errands": "0"}
    assert sensor.job_name == "chores" and sensor.minimum_interval_seconds == 30
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_nothing_due_launches_nothing(instance):
    result = _tick(_sensor({"wrk/chores": 0}), instance)
    assert not result.run_requests and result.skip_message == "no chores"


@pytest.mark.parametrize(
    "status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
)
def test_no_second_run_while_one_is_in_flight(instance, status):
    instance.create_run_for_job(chores, status=status)
    assert runs_in_flight(instance, "chores") == 1
    result = _tick(_sensor({"wrk/chores": 3}), instance)
    assert not result.run_requests and result.skip_message == "chores are being done"


def test_a_finished_run_does_not_hold_the_next_one(instance):
    instance.create_run_for_job(chores, status=dg.DagsterRunStatus.SUCCESS)
    assert runs_in_flight(instance, "chores") == 0
    assert _tick(_sensor({"wrk/chores": 1}), instance).run_requests


def test_an_idle_configuration_is_said_before_anything_is_counted(instance):
    result = _tick(_sensor({"wrk/chores": 3}, idle="no broker"), instance)
    assert not result.run_requests and result.skip_message == "no broker"

"""The outbox's sensor: a delivery run when notifications are due and none is in flight."""

from typing import Any

from domain.core import notifications
from domain.core.store import read_transaction
from orchestration_defs.housekeeping import deliver_notifications
from sensors.due_work import due_work_sensor


def notifications_due(resources: Any) -> dict[str, int]:
    with read_transaction(resources.database.engine) as session:
        return {"wrk/notifications_due": notifications.OUTBOX.due_count(session)}


outbox_sensor = due_work_sensor(
    deliver_notifications,
    notifications_due,
    name="outbox_sensor",
    minimum_interval_seconds=15,
    busy="a delivery run is in flight",
    description="Launches a delivery run when notifications are due and none is in flight.",
)

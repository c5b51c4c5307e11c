"""The outbox's sensor: a delivery run when notifications are due and none is in flight."""

from typing import Any

from sqlalchemy import func, select

from domain import queue
from domain.models import Notification, NotificationStatus
from domain.store import read_transaction
from orchestration_defs.housekeeping import deliver_notifications
from sensors.due_work import due_work_sensor


def notifications_due(resources: Any) -> dict[str, int]:
    with read_transaction(resources.database.engine) as session:
        due = session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(
                Notification.status == NotificationStatus.PENDING.value,
                Notification.next_attempt_at <= queue.now_utc(),
            )
        )
    return {"wrk/notifications_due": int(due or 0)}


outbox_sensor = due_work_sensor(
    deliver_notifications,
    notifications_due,
    name="outbox_sensor",
    minimum_interval_seconds=15,
    busy="a delivery run is in flight",
    description="Launches a delivery run when notifications are due and none is in flight.",
)

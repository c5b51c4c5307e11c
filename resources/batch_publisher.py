"""Where batch-job triggers go. Always the store's outbox first (in one transaction): with the outbox as
the transport (BATCH_TRANSPORT=outbox) they are published there; with a broker, the run then publishes its
own messages after the commit, and the relay publishes whatever it could not."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from domain import batch_jobs
from domain.models import OutboundMessage
from domain.settings import Settings
from domain.store import read_transaction, transaction
from resources.amqp import AmqpPublisher
from resources.retry import RetryPolicy

RELAY_CHUNK = 500  # messages a run publishes per relay pass (one claim, one connection)


class BatchPublisher:
    """The outbox and, when `broker_configured`, the AMQP publisher behind it (connected on first use)."""

    def __init__(self, settings: Settings, *, rabbitmq_url: str = "", queue: str = "", exchange: str | None = None):
        self.settings = settings
        broker_url = settings.rabbitmq_url.get_secret_value() if settings.rabbitmq_url else ""
        self.broker_configured = bool(rabbitmq_url) or settings.batch_transport == "rabbitmq"
        self.queue = queue or settings.bi_batch_jobs_queue
        self.exchange = settings.bi_batch_jobs_exchange if exchange is None else exchange
        self.amqp = AmqpPublisher(
            rabbitmq_url or broker_url,
            queue=self.queue,
            exchange=self.exchange,
            policy=RetryPolicy.from_settings(settings),
        )

    def publish(
        self, engine: Engine, messages: list[tuple[str, dict[str, Any], dict[str, Any]]]
    ) -> list[OutboundMessage]:
        """Add (message_id, body, headers) to the outbox in one transaction; with a broker, publish them
        after the commit. Returns the rows as they stand after (published or still pending)."""
        with transaction(engine) as session:
            for message_id, body, headers in messages:
                batch_jobs.enqueue(
                    session,
                    queue=self.queue,
                    exchange=self.exchange,
                    message_id=message_id,
                    body=body,
                    headers=headers,
                    published=not self.broker_configured,
                )
        ids = [message_id for message_id, _body, _headers in messages]
        if self.broker_configured:
            for start in range(0, len(ids), RELAY_CHUNK):  # in time order; a failure leaves the rest to the relay
                report = self.relay(engine, message_ids=ids[start : start + RELAY_CHUNK])
                if report.failed:
                    break
        with read_transaction(engine) as session:
            rows = {
                row.message_id: row
                for row in session.scalars(select(OutboundMessage).where(OutboundMessage.message_id.in_(ids)))
            }
        return [rows[message_id] for message_id in ids]

    def relay(self, engine: Engine, message_ids: list[str] | None = None) -> batch_jobs.RelayReport:
        """Publish the due outbox messages (or only `message_ids`) to the broker, in order."""
        return batch_jobs.relay_due(
            engine,
            self.amqp.publish,
            base_delay_s=self.settings.retry_base_delay_s,
            max_delay_s=self.settings.retry_max_delay_s,
            ops_email=self.settings.ops_email,
            alert_after_s=self.settings.outbox_alert_after_s,
            message_ids=message_ids,
        )

    def close(self) -> None:
        self.amqp.close()

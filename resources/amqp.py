"""RabbitMQ (AMQP 0-9-1) through pika: publishes outbox rows with publisher confirms, persistently, to a
durable queue. One connection per relay pass; a connection found closed is opened again on the next
attempt. Every broker failure is a RetryableError, so the one retry policy (resources/retry.py) applies.
`drain` consumes: each message acked only after its handler returned.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from domain.core.errors import RetryableError
from domain.core.models import OutboundMessage
from resources.retry import RetryPolicy

CONNECT_TIMEOUT_S = 5.0


class BrokerUnavailable(RetryableError):
    pass


class AmqpPublisher:
    """Publishes to `queue` through `exchange` ("" = the default exchange, routing key = queue name)."""

    def __init__(self, url: str, *, queue: str, exchange: str = "", policy: RetryPolicy | None = None) -> None:
        self.url = url
        self.queue = queue
        self.exchange = exchange
        self.policy = policy or RetryPolicy()
        self._connection: Any = None
        self._channel: Any = None
        self._declared: set[tuple[str, str]] = set()

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open and self._connection.is_open:
            return self._channel
        self.close()
        import pika  # imported where used: only the relay job publishes, not every step (docs/architecture.md)

        params = pika.URLParameters(self.url)
        params.socket_timeout = CONNECT_TIMEOUT_S
        params.blocked_connection_timeout = 30
        params.connection_attempts = 1
        self._connection = pika.BlockingConnection(params)
        channel = self._connection.channel()
        channel.confirm_delivery()  # basic_publish now waits for the broker's ack (or raises on nack)
        self._channel = channel
        self._declared = set()
        self._declare(self.queue, self.exchange)
        return channel

    def _declare(self, queue: str, exchange: str) -> None:
        """The durable queue a message goes to (and its named exchange, bound), once per connection."""
        if (queue, exchange) in self._declared:
            return
        self._channel.queue_declare(queue=queue, durable=True)
        if exchange:
            self._channel.exchange_declare(exchange=exchange, exchange_type="direct", durable=True)
            self._channel.queue_bind(queue=queue, exchange=exchange, routing_key=queue)
        self._declared.add((queue, exchange))

    def _publish_once(self, message: OutboundMessage) -> None:
        import pika
        import pika.exceptions

        # A row names its own queue and exchange (workflow publish steps use other queues than the batch
        # jobs'); rows without them go where this publisher was made for.
        queue = message.queue or self.queue
        exchange = message.exchange if message.queue else self.exchange
        try:
            channel = self._open()
            self._declare(queue, exchange)
            channel.basic_publish(
                exchange=exchange,
                routing_key=queue,
                body=json.dumps(message.body, separators=(",", ":")).encode(),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=message.message_id,
                    type=message.type,
                    timestamp=int(message.created_at.timestamp()),
                    headers=dict(message.headers or {}),
                    app_id="wrk-orchestration",
                ),
                mandatory=True,  # an unroutable message is refused, not dropped
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            detail = f"publish of {message.message_id} failed: {type(exc).__name__}: {exc}"
            raise BrokerUnavailable("rabbitmq", detail) from exc

    def publish(self, message: OutboundMessage) -> None:
        """Publish one message, confirmed by the broker; retried by the policy, then raised."""
        self.policy.call(lambda: self._publish_once(message))

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # closing a dead connection: nothing left to release
                pass


class Rejected(Exception):
    """Raised by a `drain` handler for a message that can never be consumed: rejected, not requeued."""


def drain(url: str, queues: Sequence[str], handle: Callable[[str, bytes], str], *, limit: int) -> Counter[str]:
    """Take up to `limit` messages from each durable queue and pass each to `handle(queue, body)`, which
    returns the outcome counted; the message is acked after it returns (a crash before the ack redelivers
    it, so the handler must take a message twice), rejected without requeue when it raises Rejected."""
    import pika  # imported where used, as the publisher does

    counts: Counter[str] = Counter()
    params = pika.URLParameters(url)
    params.socket_timeout = CONNECT_TIMEOUT_S
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_declare(queue=queue, durable=True)
            for _ in range(limit):
                method, _properties, body = channel.basic_get(queue=queue, auto_ack=False)
                if method is None:
                    break
                try:
                    outcome = handle(queue, body)
                except Rejected:
                    channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
                    counts["rejected"] += 1
                    continue
                channel.basic_ack(delivery_tag=method.delivery_tag)
                counts[outcome] += 1
    finally:
        if connection.is_open:
            connection.close()
    return counts

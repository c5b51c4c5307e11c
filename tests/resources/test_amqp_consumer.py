"""The AMQP consumer (resources/amqp.py `drain`) on the throwaway RabbitMQ: a message is acked only after
its handler returned, rejected for good when the handler says it can never be consumed, and left in the
queue when the handler fails."""

from __future__ import annotations

import uuid

import pika
import pytest

from resources import amqp

pytestmark = pytest.mark.xdist_group("rabbitmq")  # one broker: the outage test stops it for everyone


@pytest.fixture
def queue_name() -> str:
    return f"events_test_{uuid.uuid4().hex[:12]}"


def _publish(url: str, queue: str, *bodies: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        for body in bodies:
            channel.basic_publish(exchange="", routing_key=queue, body=body)
    finally:
        connection.close()


def _left(url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        left = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            left.append(got[2])
        return left
    finally:
        connection.close()


def test_handled_messages_are_acked_and_a_rejected_one_is_not_requeued(rabbitmq_url, queue_name):
    _publish(rabbitmq_url, queue_name, b"one", b"never", b"two")
    seen: list[tuple[str, bytes]] = []

    def handle(queue: str, body: bytes) -> str:
        seen.append((queue, body))
        if body == b"never":
            raise amqp.Rejected("not an event")
        return "consumed"

    counts = amqp.drain(rabbitmq_url, [queue_name], handle, limit=10)
    assert counts == {"consumed": 2, "rejected": 1}
    assert seen == [(queue_name, b"one"), (queue_name, b"never"), (queue_name, b"two")]
    assert _left(rabbitmq_url, queue_name) == []


def test_at_most_limit_messages_are_taken_per_queue(rabbitmq_url, queue_name):
    _publish(rabbitmq_url, queue_name, b"1", b"2", b"3")
    assert amqp.drain(rabbitmq_url, [queue_name], lambda _q, _b: "consumed", limit=2) == {"consumed": 2}
    assert _left(rabbitmq_url, queue_name) == [b"3"]


def test_a_failing_handler_leaves_its_message_in_the_queue(rabbitmq_url, queue_name):
    _publish(rabbitmq_url, queue_name, b"first", b"boom")

    def handle(_queue: str, body: bytes) -> str:
        if body == b"boom":
            raise RuntimeError("the store is down")
        return "consumed"

    with pytest.raises(RuntimeError, match="the store is down"):
        amqp.drain(rabbitmq_url, [queue_name], handle, limit=10)
    assert _left(rabbitmq_url, queue_name) == [b"boom"]  # not acked: delivered again on the next drain

"""take_batch ends its wait at the first record: a quiet topic's one record is not held for
the whole wait (``Consumer.consume(n, timeout)`` holds it until ``n`` arrive or the timeout
passes; every hop of a step paid that)."""

from __future__ import annotations

import threading
import uuid

import pytest
from confluent_kafka import Consumer, Message, Producer

from runcoord.kafka import consumer_config, producer_config, take_batch
from runcoord.stack.polling import wait_until
from tests.conftest import NewTopicFactory

pytestmark = pytest.mark.integration

LONG_WAIT_S = 60.0  # far past the deadline below: a batch that waits it out fails the test


def _assigned(consumer: Consumer) -> None:
    def assigned() -> str | None:
        assert take_batch(consumer, 1, 0.1) == []  # the topic is empty until we produce
        return None if consumer.assignment() else "no assignment"

    wait_until(assigned, timeout=30, what="the partition assigned")


def test_one_record_comes_back_without_waiting_for_a_full_batch(
    bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = new_topic(1)
    consumer = Consumer(consumer_config(bootstrap, f"g-{uuid.uuid4().hex[:8]}"))
    producer = Producer(producer_config(bootstrap))
    consumer.subscribe([topic])
    try:
        _assigned(consumer)
        taken: list[list[Message]] = []
        worker = threading.Thread(
            target=lambda: taken.append(take_batch(consumer, 500, LONG_WAIT_S))
        )
        worker.start()
        producer.produce(topic, b"one", b"k")
        producer.flush(10)
        wait_until(lambda: None if taken else "still waiting", timeout=10, what="the batch")
        worker.join()
        assert [m.value() for m in taken[0]] == [b"one"]
        # Records already fetched come back together, in order, and none is lost between
        # the first poll and the drain.
        for i in range(20):
            producer.produce(topic, str(i).encode(), b"k")
        producer.flush(10)
        got: list[bytes] = []

        def twenty() -> str | None:
            got.extend(m.value() for m in take_batch(consumer, 7, 1.0) if m.error() is None)
            return None if len(got) >= 20 else f"{len(got)} records"

        wait_until(twenty, timeout=30, what="20 records")
        assert got == [str(i).encode() for i in range(20)]
    finally:
        consumer.close()

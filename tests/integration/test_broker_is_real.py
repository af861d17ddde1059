"""The broker under the tests has the semantics the coordinator rests on.

Each test asserts the positive behaviour strictly, so against a broker (or mock) that lacks
it the test fails: aborted records hidden from read_committed, producer fencing by
transactional.id, and zombie fencing through consumer-group metadata (KIP-447).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from runcoord.errors import Fenced, KafkaRetriable
from runcoord.kafka import consumer_config, producer_config, translate
from runcoord.stack.polling import Deadline

pytestmark = pytest.mark.integration

TXN_TIMEOUT = 30.0


def _producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(producer_config(bootstrap, transactional_id=transactional_id))
    producer.init_transactions(TXN_TIMEOUT)
    return producer


def _read_until(
    bootstrap: str, topic: str, last: bytes, *, read_committed: bool, timeout: float = 30.0
) -> list[bytes]:
    """Values of partition 0 from the beginning up to and including ``last``."""
    group = f"{topic}.reader.{read_committed}"
    consumer = Consumer(consumer_config(bootstrap, group, read_committed=read_committed))
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = Deadline(timeout)
    try:
        while not deadline.expired():
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value() or b"")
            if values[-1] == last:
                return values
    finally:
        consumer.close()
    pytest.fail(f"{last!r} not read from {topic} within {timeout}s; read {values}")


def test_aborted_transaction_is_invisible_to_read_committed(
    bootstrap: str, new_topic: Callable[..., str], unique: str
) -> None:
    topic = new_topic(partitions=1)
    producer = _producer(bootstrap, f"t{unique}.abort")
    try:
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, key=b"run-1", value=f"aborted-{i}".encode())
        producer.flush(10)  # in the log before the abort, so only the marker can hide them
        producer.abort_transaction(TXN_TIMEOUT)

        producer.begin_transaction()
        producer.produce(topic, key=b"run-1", value=b"committed")
        producer.commit_transaction(TXN_TIMEOUT)
    finally:
        producer.close()

    committed = _read_until(bootstrap, topic, b"committed", read_committed=True)
    uncommitted = _read_until(bootstrap, topic, b"committed", read_committed=False)

    assert committed == [b"committed"]
    assert uncommitted == [b"aborted-0", b"aborted-1", b"aborted-2", b"committed"]


def test_second_producer_with_same_transactional_id_fences_the_first(
    bootstrap: str, new_topic: Callable[..., str], unique: str
) -> None:
    topic = new_topic(partitions=1)
    transactional_id = f"t{unique}.fence"
    first = _producer(bootstrap, transactional_id)
    first.begin_transaction()
    first.produce(topic, value=b"from-the-zombie")
    first.flush(10)

    second = _producer(bootstrap, transactional_id)  # bumps the epoch: first is now a zombie
    try:
        with pytest.raises(KafkaException) as raised:
            first.commit_transaction(TXN_TIMEOUT)
        error = raised.value.args[0]
        assert isinstance(error, KafkaError)
        assert error.fatal(), f"fencing must be fatal, got {error}"
        assert isinstance(translate(raised.value), Fenced)

        second.begin_transaction()
        second.produce(topic, value=b"from-the-owner")
        second.commit_transaction(TXN_TIMEOUT)
    finally:
        second.close()
        # close() on a fenced producer raises its fatal error again; that is expected here.
        with contextlib.suppress(KafkaException):
            first.close()

    assert _read_until(bootstrap, topic, b"from-the-owner", read_committed=True) == [
        b"from-the-owner"
    ]


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    made: list[Consumer] = []
    yield made
    for consumer in made:
        _close(consumer)


def _close(consumer: Consumer) -> None:
    """close() of a member that was removed from its group can block for ever inside
    librdkafka (confluent-kafka-python#1573, #1667), holding the GIL, so neither pytest's
    timeout nor a watchdog thread gets it back; a CI run hung on it twice. Leaving the group
    first, and polling until the revocation has been served, leaves close() nothing to wait
    for."""
    consumer.unsubscribe()
    deadline = Deadline(10)
    while consumer.assignment() and not deadline.expired():
        consumer.poll(0.1)
    consumer.close()


def _poll_until(
    consumer: Consumer, condition: str, ok: Callable[[], bool], *, timeout: float
) -> None:
    deadline = Deadline(timeout)
    while not deadline.expired():
        msg = consumer.poll(0.2)
        assert msg is None or msg.error() is None, msg.error()
        if ok():
            return
    pytest.fail(f"{condition} did not happen within {timeout}s")


def test_offsets_from_a_removed_group_member_are_refused(
    bootstrap: str, new_topic: Callable[..., str], unique: str, consumers: list[Consumer]
) -> None:
    """KIP-447: a zombie's send_offsets_to_transaction with stale group metadata cannot commit."""
    inputs = new_topic(partitions=2, name="in")
    outputs = new_topic(partitions=1, name="out")
    seed = Producer(producer_config(bootstrap))
    for partition in (0, 1):
        seed.produce(inputs, value=b"input", partition=partition)
    assert seed.flush(10) == 0
    seed.close()

    group = f"t{unique}.zombie-group"
    # Small timeouts so the member that stops polling is removed in ~7 s (DESIGN.md,
    # "Measured facts").
    timeouts: dict[str, Any] = {"session.timeout.ms": 6000, "max.poll.interval.ms": 7000}
    zombie_consumer = Consumer(consumer_config(bootstrap, group, **timeouts))
    consumers.append(zombie_consumer)
    zombie_consumer.subscribe([inputs])
    _poll_until(
        zombie_consumer,
        "first member owns both partitions",
        lambda: len(zombie_consumer.assignment()) == 2,
        timeout=30,
    )
    stale_metadata = zombie_consumer.consumer_group_metadata()
    # From here on the first member never polls again: it is the paused zombie.
    paused_at = time.monotonic()

    live_consumer = Consumer(consumer_config(bootstrap, group, **timeouts))
    consumers.append(live_consumer)
    live_consumer.subscribe([inputs])
    _poll_until(
        live_consumer,
        "second member takes both partitions",
        lambda: len(live_consumer.assignment()) == 2,
        timeout=30,
    )
    assert time.monotonic() - paused_at >= 6.0, "the zombie was removed before its timeouts"

    offsets = [TopicPartition(inputs, 0, 1), TopicPartition(inputs, 1, 1)]
    zombie = _producer(bootstrap, f"t{unique}.zombie-txn")
    try:
        zombie.begin_transaction()
        zombie.produce(outputs, value=b"zombie-output")
        with pytest.raises(KafkaException) as raised:
            zombie.send_offsets_to_transaction(offsets, stale_metadata, TXN_TIMEOUT)
        error = raised.value.args[0]
        assert isinstance(error, KafkaError)
        assert error.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION), error
        assert error.txn_requires_abort(), f"expected an abortable error, got {error}"
        translated = translate(raised.value)
        assert isinstance(translated, KafkaRetriable)
        assert getattr(translated, "requires_abort", False)
        zombie.abort_transaction(TXN_TIMEOUT)
    finally:
        zombie.close()

    # Control: the same transaction with the live member's metadata commits, so the refusal
    # above was about the stale member, not about the transaction.
    owner = _producer(bootstrap, f"t{unique}.owner-txn")
    try:
        owner.begin_transaction()
        owner.produce(outputs, value=b"owner-output")
        owner.send_offsets_to_transaction(
            offsets, live_consumer.consumer_group_metadata(), TXN_TIMEOUT
        )
        owner.commit_transaction(TXN_TIMEOUT)
    finally:
        owner.close()

    assert _read_until(bootstrap, outputs, b"owner-output", read_committed=True) == [
        b"owner-output"
    ]
    committed = live_consumer.committed([TopicPartition(inputs, p) for p in (0, 1)], timeout=10)
    assert sorted((tp.partition, tp.offset) for tp in committed) == [(0, 1), (1, 1)]

"""The one mapping from librdkafka errors to runcoord exceptions, and the client configs."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from runcoord.errors import Fenced, KafkaFatal, KafkaRetriable, Retriable
from runcoord.kafka import (
    consumer_config,
    error_for,
    producer_config,
    raise_for_error,
    translate,
)


@pytest.mark.parametrize(
    ("error", "expected", "requires_abort"),
    [
        # Fenced wins over every flag: a zombie must stop, not retry.
        (KafkaError(KafkaError._FENCED, fatal=True), Fenced, False),
        (KafkaError(KafkaError.PRODUCER_FENCED), Fenced, False),
        (KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, txn_requires_abort=True), Fenced, False),
        (KafkaError(KafkaError.FENCED_INSTANCE_ID), Fenced, False),
        (KafkaError(KafkaError._FATAL, fatal=True), KafkaFatal, False),
        (KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True), KafkaFatal, False),
        (KafkaError(KafkaError._TRANSPORT, retriable=True), KafkaRetriable, False),
        (KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True), KafkaRetriable, False),
        # The zombie-fencing case of DESIGN.md, "Measured facts": abortable, then the consumer
        # rejoins.
        (KafkaError(KafkaError.UNKNOWN_MEMBER_ID, txn_requires_abort=True), KafkaRetriable, True),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), KafkaFatal, False),
    ],
    ids=lambda v: v.name() if isinstance(v, KafkaError) else None,
)
def test_translate(error: KafkaError, expected: type[Exception], requires_abort: bool) -> None:
    translated = translate(KafkaException(error))
    assert isinstance(translated, expected)
    assert translated.kafka_error is error  # type: ignore[attr-defined]
    assert translated.requires_abort is requires_abort  # type: ignore[attr-defined]
    if expected is not KafkaRetriable:
        assert not isinstance(translated, Retriable)
    assert error.name() in str(translated)


def test_fenced_is_fatal() -> None:
    assert isinstance(error_for(KafkaError(KafkaError.PRODUCER_FENCED)), KafkaFatal)


def test_translate_without_kafka_error_is_fatal() -> None:
    assert isinstance(translate(KafkaException("plain message")), KafkaFatal)


def test_raise_for_error() -> None:
    raise_for_error(None)
    with pytest.raises(KafkaRetriable):
        raise_for_error(KafkaError(KafkaError._TRANSPORT, retriable=True))


def test_producer_config_carries_the_measured_tunings() -> None:
    config = producer_config("b:9092", transactional_id="tx", client_id="c", **{"linger.ms": 0})
    assert config["retry.backoff.ms"] == 5
    assert config["socket.nagle.disable"] is True
    assert config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["transactional.id"] == "tx"
    assert config["client.id"] == "c"
    assert config["linger.ms"] == 0
    assert "transactional.id" not in producer_config("b:9092")


def test_consumer_config_commits_only_on_purpose() -> None:
    config = consumer_config("b:9092", "g")
    assert config["enable.auto.commit"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["isolation.level"] == "read_committed"
    assert consumer_config("b", "g", read_committed=False)["isolation.level"] == (
        "read_uncommitted"
    )

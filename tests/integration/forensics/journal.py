"""Write synthetic journals into a test's topics: real Avro records, as the coordinator writes."""

from __future__ import annotations

from confluent_kafka import Producer

from runcoord.forensics.synthetic import Encoded
from runcoord.kafka import producer_config


def produce(bootstrap: str, records: list[Encoded]) -> None:
    producer = Producer(producer_config(bootstrap))
    for r in records:
        producer.produce(r.topic, r.value, r.key, partition=r.partition, headers=r.headers)
    assert producer.flush(30) == 0, "records left undelivered"

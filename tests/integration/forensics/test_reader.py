"""PositionReader: one reader serves many fetches (the API's event stream reuses one while it
follows a run), including a second fetch of a partition an earlier fetch finished with."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from runcoord.forensics.reader import PositionReader
from runcoord.kafka import producer_config

pytestmark = pytest.mark.integration


def test_a_partition_read_to_its_end_can_be_read_again(bootstrap: str, new_topic) -> None:  # type: ignore[no-untyped-def]
    topic = new_topic(partitions=1)
    producer = Producer(producer_config(bootstrap))
    for i in range(4):
        producer.produce(topic, f"v{i}".encode(), b"k", partition=0)
    assert producer.flush(30) == 0
    with PositionReader(bootstrap) as reader:
        first = reader.fetch({(topic, 0): [0, 1]}, timeout=10)
        assert sorted(o for _, _, o in first) == [0, 1]
        started = time.monotonic()
        # The follow-up fetch of the same partition, as a stream's next poll makes it.
        again = reader.fetch({(topic, 0): [2, 3]}, timeout=10)
        assert sorted(o for _, _, o in again) == [2, 3]
        assert time.monotonic() - started < 5  # read at once, not after the timeout

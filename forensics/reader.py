"""Read given records by position: the projection says where a run's records are, this fetches
exactly those, never scanning a topic.

Offsets close together are read as one range (one seek, a few fetches); the gap below which
two offsets share a range trades a few unwanted records for a round trip saved.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from runcoord.errors import KafkaRetriable
from runcoord.kafka import consumer_config, raise_for_error

# Records between two wanted offsets that we would rather read than seek past.
GAP = 256


@dataclass(frozen=True, slots=True)
class Fetched:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def ranges(offsets: Iterable[int], gap: int = GAP) -> list[tuple[int, int]]:
    """Sorted, merged [first, last] ranges covering ``offsets``."""
    out: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if out and offset - out[-1][1] <= gap:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out


class PositionReader:
    """A consumer that is only ever assigned (no group membership, no commits)."""

    def __init__(self, bootstrap: str) -> None:
        # The group id is never joined (assign, not subscribe) and nothing is committed.
        overrides: dict[str, Any] = {"enable.partition.eof": True, "fetch.wait.max.ms": 10}
        config = consumer_config(
            bootstrap, f"runcoord-forensics-reader-{uuid.uuid4().hex[:8]}", **overrides
        )
        self._consumer = Consumer(config)

    def __enter__(self) -> PositionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def fetch(
        self, wanted: Mapping[tuple[str, int], Iterable[int]], timeout: float = 10.0
    ) -> dict[tuple[str, int, int], Fetched]:
        """The records at the given (topic, partition) -> offsets; missing ones are absent
        (deleted by retention, or past the end)."""
        found: dict[tuple[str, int, int], Fetched] = {}
        deadline = time.monotonic() + timeout
        for (topic, partition), offsets in wanted.items():
            want = set(offsets)
            for first, last in ranges(want):
                self._read_range(topic, partition, first, last, want, found, deadline)
        return found

    def _read_range(
        self,
        topic: str,
        partition: int,
        first: int,
        last: int,
        want: set[int],
        found: dict[tuple[str, int, int], Fetched],
        deadline: float,
    ) -> None:
        self._consumer.assign([TopicPartition(topic, partition, first)])
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaRetriable(f"reading {topic}[{partition}] {first}..{last} timed out")
            for msg in self._consumer.consume(500, min(remaining, 1.0)):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return
                    raise_for_error(err)
                offset = msg.offset() or 0
                if offset in want:
                    found[(topic, partition, offset)] = Fetched(
                        topic,
                        partition,
                        offset,
                        msg.timestamp()[1],
                        msg.key(),
                        msg.value(),
                    )
                if offset >= last:
                    return

"""Read given records by position: the projection says where a run's records are, this fetches
exactly those, never scanning a topic.

Offsets close together are read as one range (one seek, a few fetches). A seek costs a
round trip or two before the first record arrives (0.05-0.7 s measured on a busy broker),
while reading through a few thousand unwanted records costs a few milliseconds, so ranges
are merged generously.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from runcoord.errors import KafkaRetriable
from runcoord.kafka import consumer_config, raise_for_error

# Records between two wanted offsets that we would rather read than seek past.
GAP = 8192


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
        overrides: dict[str, Any] = {
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            # Each range is a short read right after a seek: librdkafka's defaults (prefetch
            # 100k records, then back off 1 s once the queue is "full", 500 ms after a fetch
            # error) are made for streaming and cost whole seconds here.
            "queued.min.messages": 1000,
            "fetch.queue.backoff.ms": 0,
            "fetch.error.backoff.ms": 10,
        }
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
        (deleted by retention, or past the end).

        Every partition is assigned at once at its first range, so a run's events and its
        intents (same partition number, two topics) are fetched in parallel; a partition that
        finished a range seeks to its next one, and is paused when it has no more.
        """
        found: dict[tuple[str, int, int], Fetched] = {}
        plans = {tp: deque(ranges(offsets)) for tp, offsets in wanted.items()}
        plans = {tp: plan for tp, plan in plans.items() if plan}
        want = {tp: set(offsets) for tp, offsets in wanted.items()}
        if not plans:
            return found
        current = {tp: plan.popleft() for tp, plan in plans.items()}
        parts = [TopicPartition(t, p, r[0]) for (t, p), r in current.items()]
        self._consumer.assign(parts)
        # An earlier fetch paused the partitions it finished with, and assign() keeps a
        # partition's pause: without this a second fetch of one waits out its whole timeout.
        self._consumer.resume(parts)
        active = set(current)
        deadline = time.monotonic() + timeout

        def next_range(tp: tuple[str, int]) -> None:
            if plans[tp]:
                current[tp] = plans[tp].popleft()
                self._consumer.seek(TopicPartition(tp[0], tp[1], current[tp][0]))
            else:
                active.discard(tp)
                self._consumer.pause([TopicPartition(tp[0], tp[1])])

        while active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaRetriable(f"reading {sorted(active)} timed out")
            # poll, not consume(n): consume waits until it has n records or times out, which
            # costs its whole timeout on every range shorter than n.
            msg = self._consumer.poll(min(remaining, 1.0))
            if msg is None:
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if tp in active:  # nothing beyond the end: no later range can exist
                        plans[tp].clear()
                        next_range(tp)
                    continue
                raise_for_error(err)
            if tp not in active:
                continue
            offset = msg.offset() or 0
            first, last = current[tp]
            if offset < first:
                continue  # fetched before the last seek
            if offset in want[tp]:
                found[(tp[0], tp[1], offset)] = Fetched(
                    tp[0], tp[1], offset, msg.timestamp()[1], msg.key(), msg.value()
                )
            if offset >= last:
                next_range(tp)
        return found

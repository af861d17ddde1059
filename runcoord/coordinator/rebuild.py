"""Rebuilding a partition's runs from the compacted ``runs.state`` on assignment."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.domain import RunState
from runcoord.errors import KafkaRetriable, SerializationError
from runcoord.kafka import consumer_config, raise_for_error, take_batch, translate

log = logging.getLogger(__name__)


class StateReader:
    """Reads a partition of ``runs.state`` to its end (the last stable offset) once.

    read_committed stops at the last stable offset, so the open transaction of a zombie
    that is about to be aborted is never read as state.
    """

    def __init__(self, bootstrap: str, topic: str, group_id: str, codec: AvroCodec) -> None:
        self.topic = topic
        self.codec = codec
        config = consumer_config(bootstrap, group_id, read_committed=True)
        config["enable.partition.eof"] = True
        # The end of a partition is a fetch that comes back empty, and the broker holds an
        # empty fetch for fetch.wait.max.ms (500 ms by default): with the default, reading a
        # partition to its end cost about a second even when it was short, and one
        # partition after another, so a restarted replica waited seconds for its runs.
        config["fetch.wait.max.ms"] = 10
        self._consumer = Consumer(config)

    def read(
        self, partitions: Sequence[int], timeout_s: float = 60.0
    ) -> dict[int, dict[str, RunState]]:
        """The runs of each partition, all read together, each to its end.

        Only each run's newest snapshot is decoded, once the partition is read: compaction
        keeps just that one, but only in closed segments, so the log read still holds
        every snapshot written since the last clean (each decision writes one). Decoding
        them all made a restart's rebuild grow with the traffic since then, not with the
        runs alive."""
        if not partitions:
            return {}
        newest: dict[int, dict[str, tuple[bytes, int]]] = {p: {} for p in partitions}
        # The topic's metadata first: assigned without it, the first fetch waited 0.5 s
        # for librdkafka to look the leaders up (measured: the end of an empty partition
        # came after 514 ms, and after 23 ms with this).
        try:
            self._consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc) from exc
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        try:
            while remaining:
                if time.monotonic() > deadline:
                    late = ", ".join(str(p) for p in sorted(remaining))
                    raise KafkaRetriable(f"{self.topic}[{late}] not read to its end in time")
                for msg in take_batch(self._consumer, 1000, 0.5):
                    partition = msg.partition() or 0
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            remaining.discard(partition)
                            continue
                        raise_for_error(err)
                    key = msg.key()
                    if partition not in remaining or key is None:
                        continue  # past its end nothing is read
                    value = msg.value()
                    if value is None:  # a tombstone: the run ended
                        newest[partition].pop(key.decode(), None)
                    else:
                        newest[partition][key.decode()] = (value, msg.offset() or 0)
        finally:
            self._consumer.unassign()
        return {p: self._decode(snapshots) for p, snapshots in newest.items()}

    def _decode(self, snapshots: dict[str, tuple[bytes, int]]) -> dict[str, RunState]:
        runs: dict[str, RunState] = {}
        for run_id, (value, offset) in snapshots.items():
            try:
                name, datum = self.codec.decode(value)
                state = from_record(name, datum)
            except SerializationError as exc:
                # A snapshot we cannot read would silently lose the run: refuse to go on.
                raise SerializationError(
                    f"{self.topic} offset {offset}: snapshot of run {run_id} unreadable: {exc}"
                ) from exc
            if isinstance(state, RunState):
                runs[run_id] = state
        return runs

    def close(self) -> None:
        self._consumer.close()

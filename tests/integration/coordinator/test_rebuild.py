"""Rebuilding a partition's runs from runs.state, on the real broker: each run's newest
snapshot, decoded once the partition is read (the log still holds every older one until
compaction cleans its segment)."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.coordinator.rebuild import StateReader
from runcoord.domain import RunState
from runcoord.errors import SerializationError
from runcoord.kafka import TopicNames, producer_config

CODEC = AvroCodec()


def state(run_id: str, seq: int) -> RunState:
    return RunState(
        run_id=run_id,
        tenant="t1",
        thread_id="th",
        assistant_id="a",
        provider="assistants",
        input="hi",
        accepted_at_ms=1,
        run_deadline_ms=10_000,
        seq=seq,
    )


def write(bootstrap: str, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = Producer(producer_config(bootstrap))
    for run_id, value in records:
        producer.produce(topic, key=run_id.encode(), value=value, partition=0)
    assert producer.flush(30) == 0


def snapshot(s: RunState) -> bytes:
    return CODEC.encode(*to_record(s))


def test_a_rebuild_keeps_each_runs_newest_snapshot(
    bootstrap: str, topics: TopicNames, unique: str
) -> None:
    a = [state("run-a", seq) for seq in (1, 2, 3)]
    write(
        bootstrap,
        topics.state,
        [
            ("run-a", snapshot(a[0])),
            ("run-b", snapshot(state("run-b", 1))),
            ("run-c", b"\xc3\x01 not a snapshot"),  # unreadable, but superseded below
            ("run-a", snapshot(a[1])),
            ("run-b", None),  # run-b ended: its tombstone
            ("run-c", snapshot(state("run-c", 2))),
            ("run-a", snapshot(a[2])),
        ],
    )
    reader = StateReader(bootstrap, topics.state, f"rebuild-{unique}", CODEC)
    try:
        runs = reader.read([0])
    finally:
        reader.close()
    assert runs == {0: {"run-a": a[2], "run-c": state("run-c", 2)}}


def test_an_unreadable_newest_snapshot_stops_the_rebuild(
    bootstrap: str, topics: TopicNames, unique: str
) -> None:
    good = state("run-a", 1)
    write(bootstrap, topics.state, [("run-a", snapshot(good)), ("run-a", b"\xc3\x01 torn")])
    reader = StateReader(bootstrap, topics.state, f"rebuild-{unique}", CODEC)
    try:
        # Taking the older snapshot would roll the run back behind what it did.
        with pytest.raises(SerializationError, match="offset 1: snapshot of run run-a"):
            reader.read([0])
    finally:
        reader.close()

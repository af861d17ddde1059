"""The projector on the real broker and database: everything indexed once, whatever is
redelivered, and offsets committed only after the rows are."""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.deadletter import DeadLetter
from runcoord.forensics.projector import Projector, ProjectorConfig
from runcoord.forensics.synthetic import Encoded, Templates, interleave
from runcoord.kafka import TopicNames, consumer_config
from tests.integration.forensics.journal import produce
from tests.integration.forensics.projection import projector, wait_rows

pytestmark = pytest.mark.integration

PHASE = 10  # forensics_runs.phase, by position in the table
TABLES = {
    "forensics_runs": "run_id",
    "forensics_events": "run_id, seq",
    "forensics_steps": "run_id, step_id",
    "forensics_intents": "kafka_partition, kafka_offset",
    "forensics_dead_letters": "kafka_partition, kafka_offset",
}


def snapshot(dsn: str, journal: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(
                f"SELECT * FROM {table} WHERE journal = %s ORDER BY {order}", (journal,)
            ).fetchall()
            for table, order in TABLES.items()
        }


def journal(topics: TopicNames, runs: int) -> list[Encoded]:
    rng = random.Random(3)
    templates = Templates(topics, AvroCodec(), 6, int(time.time() * 1000))
    records = list(interleave((templates.run(n, n % 4) for n in range(runs)), 10, rng))
    letter = DeadLetter(topics.inbox, 2, 7, "b-0000003", "rejected", "unknown tool_call_id c9",
                        "ToolResult", b"", "coord-0", int(time.time() * 1000))  # fmt: skip
    name, datum = to_record(letter)
    records.append(Encoded(topics.dlq, 0, b"b-0000003", AvroCodec().encode(name, datum), []))
    return records


def read_all(bootstrap: str, topics: TopicNames) -> list[Any]:
    consumer = Consumer(consumer_config(bootstrap, f"{topics.events}-reader"))
    consumer.subscribe([topics.events, topics.effects, topics.dlq])
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(messages) < 100 and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(500, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return messages


def test_redelivery_changes_nothing_and_offsets_follow_the_rows(
    bootstrap: str, pg_dsn: str, topics: TopicNames
) -> None:
    records = journal(topics, 12)
    events = sum(1 for r in records if r.topic == topics.events)
    produce(bootstrap, records)
    group = f"{topics.events}-projector"
    count = "SELECT count(*) FROM forensics_events WHERE journal = %s"
    with projector(bootstrap, pg_dsn, topics, group):
        wait_rows(pg_dsn, count, (topics.events,), lambda n: n == events)
        wait_rows(
            pg_dsn,
            "SELECT count(*) FROM forensics_dead_letters WHERE journal = %s",
            (topics.events,),
            lambda n: n == 1,
        )
    first = snapshot(pg_dsn, topics.events)
    assert len(first["forensics_runs"]) == 12
    assert {r[PHASE] for r in first["forensics_runs"]} == {"completed"}
    assert len(first["forensics_intents"]) == len(records) - events - 1

    # The offsets committed are exactly the ends of what was written.
    check = Consumer(consumer_config(bootstrap, group))
    try:
        parts = [TopicPartition(topics.events, p) for p in range(6)]
        committed = {tp.partition: tp.offset for tp in check.committed(parts, timeout=10)}
    finally:
        check.close()
    written: dict[int, int] = {}
    for row in first["forensics_events"]:
        written[row[3]] = max(written.get(row[3], -1), row[4])
    assert {p: committed[p] for p in written} == {p: o + 1 for p, o in written.items()}

    # Every record redelivered (a new group starts from the beginning): nothing changes.
    with projector(bootstrap, pg_dsn, topics, f"{group}-again") as again:
        wait_rows(pg_dsn, count, (topics.events,), lambda n: again.stats.events >= events)
    assert snapshot(pg_dsn, topics.events) == first

    # A batch applied twice, and a batch holding each record twice, in a reversed order.
    messages = read_all(bootstrap, topics)
    p = Projector(ProjectorConfig(bootstrap, pg_dsn, topics))
    with psycopg.connect(pg_dsn) as conn:
        p.apply(conn, p.decode(messages))
        p.apply(conn, p.decode(messages + messages[::-1]))
    assert snapshot(pg_dsn, topics.events) == first

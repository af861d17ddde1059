"""The outbox refuses a decision that would write a record Kafka refuses, before adding any.

Such a record fails its whole transaction again on every retry; refused here, its input is
dead-lettered instead and the partition goes on (tests/integration/test_bad_input.py shows it
on the real broker).
"""

from __future__ import annotations

import pytest

from runcoord.codec import AvroCodec
from runcoord.coordinator.outbox import MAX_RECORD_BYTES, Outbox, RecordTooLarge
from runcoord.deadletter import DeadLetter
from runcoord.domain import inputs as inp
from runcoord.kafka import TopicNames
from tests.unit.domain.helpers import Driver, call


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


def open_step(d: Driver, calls: int) -> None:
    d.feed(inp.StartRun("r1", "t1", "th1", "asst1", "assistants", "hello", 0))
    d.created()
    d.observe("requires_action", "step_1", tuple(call(i) for i in range(calls)))


def test_a_decision_whose_snapshot_is_too_large_adds_nothing(codec: AvroCodec) -> None:
    d = Driver()
    open_step(d, 2)
    outbox = Outbox(codec, TopicNames.with_prefix(), max_record_bytes=10_000)
    small = d.result("call_0", '"small"')
    outbox.decision(0, small)
    before = list(outbox.records)
    big = d.result("call_1", '"' + "x" * 20_000 + '"')
    with pytest.raises(RecordTooLarge, match=r"would be \d+ bytes"):
        outbox.decision(0, big)
    assert outbox.records == before, "nothing of the refused decision was added"
    assert small.state is not None
    outbox.snapshot(0, small.state)  # the run's last good state is what the batch writes
    assert codec.decode(outbox.records[-1].value or b"")[0] == "RunState"


def test_a_dead_letter_of_an_input_near_the_limit_keeps_a_prefix(codec: AvroCodec) -> None:
    outbox = Outbox(codec, TopicNames.with_prefix())
    payload = b"p" * (MAX_RECORD_BYTES - 10)
    outbox.dead_letter(
        DeadLetter("runs.inbox", 3, 42, "r1", "internal", "too big", "StartRun", payload, "c", 0)
    )
    [record] = outbox.records
    assert len(record.value or b"") <= MAX_RECORD_BYTES
    _, letter = codec.decode(record.value or b"")
    assert payload.startswith(letter["payload"]) and len(letter["payload"]) > 900_000
    assert f"of {len(payload)} bytes kept" in letter["reason"]
    assert (letter["partition"], letter["offset"]) == (3, 42), "where the whole input stays"

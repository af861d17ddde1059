"""Everything one batch writes, encoded before anything is produced.

Encoding a whole decision first means an encoding bug dead-letters the one input that
caused it instead of leaving half its outputs in the transaction. The same holds for size:
a record Kafka would refuse fails its whole transaction again on every retry, stalling the
partition for good, so a decision that would write one (its run's snapshot included) is
refused here, before anything of it is added, and its input is dead-lettered instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.deadletter import DeadLetter
from runcoord.domain import Decision, RunState
from runcoord.domain.events import ToolOutputRecorded
from runcoord.domain.intents import KIND
from runcoord.errors import SerializationError
from runcoord.kafka import TopicNames

Headers = list[tuple[str, str | bytes | None]]

# librdkafka refuses a record whose value, key and headers together exceed its
# message.max.bytes (1,000,000 by default, under the broker's 1 MiB); the margin covers its
# framing of the headers.
MAX_RECORD_BYTES = 1_000_000 - 1024


class RecordTooLarge(SerializationError):
    """A record this batch would write is over Kafka's size limit for one record."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes | None
    partition: int | None  # None: let the murmur2 partitioner place it by key
    headers: Headers


@dataclass
class Outbox:
    codec: AvroCodec
    topics: TopicNames
    records: list[Record] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    event_types: Counter[str] = field(default_factory=Counter)
    intent_kinds: Counter[str] = field(default_factory=Counter)
    dead_letter_kinds: Counter[str] = field(default_factory=Counter)
    deadline_outputs: int = 0
    max_record_bytes: int = MAX_RECORD_BYTES
    # The trace context (runcoord.tracing) of the input being decided: added to every event,
    # intent and dead letter it causes, so the consumers continue its trace. Empty when
    # tracing is off, and snapshots never carry it (a snapshot is state, not a message).
    trace: Headers = field(default_factory=list)
    # run_id -> (state, its encoded snapshot): checked with the decision that made the state,
    # reused when the batch writes the run's final snapshot.
    _snapshots: dict[str, tuple[RunState, bytes]] = field(default_factory=dict)

    def encode(self, message: Any) -> tuple[str, bytes]:
        name, datum = to_record(message)
        return name, self.codec.encode(name, datum)

    def decision(self, partition: int, decision: Decision) -> None:
        """Add a decision's events and intents (raises SerializationError before adding any).

        Its state's snapshot is encoded and checked too (RecordTooLarge), not yet added.
        """
        staged: list[Record] = []
        for event in decision.events:
            name, value = self.encode(event)
            headers: Headers = [("type", name.encode())]
            if self.trace:
                headers += self.trace
            staged.append(
                Record(self.topics.events, event.run_id.encode(), value, partition, headers)
            )
        for intent in decision.intents:
            name, value = self.encode(intent)
            headers = [
                ("kind", KIND[type(intent)].encode()),
                ("effect_key", intent.effect_key.encode()),
            ]
            if self.trace:
                headers += self.trace
            staged.append(
                Record(self.topics.effects, intent.run_id.encode(), value, partition, headers)
            )
        for record in staged:
            self._check_size(record)
        if decision.state is not None:
            snapshot = self._snapshot_record(partition, decision.state)
            self._check_size(snapshot)
            assert snapshot.value is not None
            self._snapshots[decision.state.run_id] = (decision.state, snapshot.value)
        self.records.extend(staged)
        for event in decision.events:
            self.event_types[type(event).__name__] += 1
            if isinstance(event, ToolOutputRecorded) and event.output.source == "deadline":
                self.deadline_outputs += 1
        for intent in decision.intents:
            self.intent_kinds[KIND[type(intent)]] += 1
        self._count("events", len(decision.events))
        self._count("intents", len(decision.intents))

    def snapshot(self, partition: int, state: RunState) -> None:
        self.records.append(self._snapshot_record(partition, state))
        self._count("snapshots", 1)

    def _snapshot_record(self, partition: int, state: RunState) -> Record:
        cached = self._snapshots.get(state.run_id)
        value = cached[1] if cached is not None and cached[0] is state else self.encode(state)[1]
        return Record(
            self.topics.state, state.run_id.encode(), value, partition, [("type", b"RunState")]
        )

    def dead_letter(self, letter: DeadLetter) -> None:
        record = self._letter_record(letter)
        excess = _size(record) - self.max_record_bytes
        if excess > 0:
            # The input itself was near the limit. Keep what fits: its topic, partition and
            # offset say where the whole of it stays for the topic's retention.
            keep = max(0, len(letter.payload) - excess - 256)
            letter = dataclasses.replace(
                letter,
                payload=letter.payload[:keep],
                reason=f"{letter.reason} (first {keep} of {len(letter.payload)} bytes kept)",
            )
            record = self._letter_record(letter)
        self.records.append(record)
        self._count("dead_letters", 1)
        self.dead_letter_kinds[letter.kind] += 1

    def _letter_record(self, letter: DeadLetter) -> Record:
        _, value = self.encode(letter)
        key = (letter.key or "").encode()
        headers: Headers = [("reason", letter.reason[:200].encode())]
        if self.trace:
            headers += self.trace
        return Record(self.topics.dlq, key, value, None, headers)

    def _check_size(self, record: Record) -> None:
        size = _size(record)
        if size > self.max_record_bytes:
            raise RecordTooLarge(
                f"a record for {record.topic} of run {record.key.decode(errors='replace')} "
                f"would be {size} bytes; one Kafka record holds at most {self.max_record_bytes}"
            )

    def _count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def flush_into(self, produce: Callable[[Record], None]) -> int:
        for record in self.records:
            produce(record)
        return len(self.records)


def _size(record: Record) -> int:
    """What librdkafka counts against message.max.bytes: value, key and headers."""
    headers = sum(len(k) + len(v or b"") for k, v in record.headers)
    return len(record.value or b"") + len(record.key) + headers

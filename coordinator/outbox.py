"""Everything one batch writes, encoded before anything is produced.

Encoding a whole decision first means an encoding bug dead-letters the one input that
caused it instead of leaving half its outputs in the transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.domain import Decision, RunState
from coordinator.domain.intents import KIND
from coordinator.wire import to_record
from runcoord.codec import AvroCodec
from runcoord.deadletter import DeadLetter
from runcoord.kafka import TopicNames

Headers = list[tuple[str, str | bytes | None]]


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

    def encode(self, message: Any) -> tuple[str, bytes]:
        name, datum = to_record(message)
        return name, self.codec.encode(name, datum)

    def decision(self, partition: int, decision: Decision) -> None:
        """Add a decision's events and intents (raises SerializationError before adding any)."""
        staged: list[Record] = []
        for event in decision.events:
            name, value = self.encode(event)
            staged.append(
                Record(
                    self.topics.events,
                    event.run_id.encode(),
                    value,
                    partition,
                    [("type", name.encode())],
                )
            )
        for intent in decision.intents:
            name, value = self.encode(intent)
            headers: Headers = [
                ("kind", KIND[type(intent)].encode()),
                ("effect_key", intent.effect_key.encode()),
            ]
            staged.append(
                Record(self.topics.effects, intent.run_id.encode(), value, partition, headers)
            )
        self.records.extend(staged)
        self._count("events", len(decision.events))
        self._count("intents", len(decision.intents))

    def snapshot(self, partition: int, state: RunState) -> None:
        _, value = self.encode(state)
        self.records.append(
            Record(
                self.topics.state, state.run_id.encode(), value, partition, [("type", b"RunState")]
            )
        )
        self._count("snapshots", 1)

    def dead_letter(self, letter: DeadLetter) -> None:
        _, value = self.encode(letter)
        key = (letter.key or "").encode()
        self.records.append(
            Record(self.topics.dlq, key, value, None, [("reason", letter.reason[:200].encode())])
        )
        self._count("dead_letters", 1)

    def _count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def flush_into(self, produce: Callable[[Record], None]) -> int:
        for record in self.records:
            produce(record)
        return len(self.records)

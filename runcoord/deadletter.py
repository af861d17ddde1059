"""Dead-letter records: what could not be applied, with the reason, never silently dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class _Consumed(Protocol):
    """What a dead letter needs of a consumed Kafka message (confluent_kafka.Message)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be applied, kept with the reason and its original bytes."""

    source_topic: str
    partition: int
    offset: int
    key: str | None
    # decode | correlation | validation | ...: what kind of problem, for metrics and triage
    kind: str
    reason: str
    record_name: str | None
    payload: bytes
    consumer: str
    at_ms: int

    @classmethod
    def of(
        cls,
        msg: _Consumed,
        *,
        kind: str,
        reason: str,
        record_name: str | None,
        consumer: str,
        at_ms: int,
    ) -> DeadLetter:
        """The dead letter of one consumed message, with its original bytes."""
        key, value = msg.key(), msg.value()
        return cls(
            source_topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.decode(errors="replace") if isinstance(key, bytes) else key,
            kind=kind,
            reason=reason,
            record_name=record_name,
            payload=value.encode() if isinstance(value, str) else value or b"",
            consumer=consumer,
            at_ms=at_ms,
        )

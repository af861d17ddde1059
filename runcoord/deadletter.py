"""Dead-letter records: what could not be applied, with the reason, never silently dropped."""

from __future__ import annotations

from dataclasses import dataclass


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

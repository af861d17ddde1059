"""Everything known about one run, gathered from Kafka and PostgreSQL, as plain values.

The explainer works on these only, so it is tested without any server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runcoord.domain import events as ev
from runcoord.domain import intents as it
from runcoord.forensics.projection import RunRow


@dataclass(frozen=True, slots=True)
class JournalEntry:
    event: ev.JournalEvent
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class IntentEntry:
    effect_key: str
    kind: str
    at_ms: int
    partition: int
    offset: int
    intent: it.EffectIntent | None  # None when the record is gone (effects keeps 7 days)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    effect_key: str
    kind: str
    state: str
    fencing_token: int
    attempts: int
    lease_owner: str | None
    claimed_at_ms: int
    sent_at_ms: int | None
    completed_at_ms: int | None
    result: Any
    error: str | None
    step_id: str | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: int
    tool: str
    tool_call_id: str | None
    payload_hash: str
    idempotency_key: str | None
    fencing_token: int | None
    acted_at_ms: int
    response: Any = None  # what the tool answered when it acted (sandbox_actions)


@dataclass(frozen=True, slots=True)
class LetterEntry:
    kind: str
    reason: str
    source_topic: str
    record_name: str | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """What the registry says about a tool, as far as explaining it needs."""

    name: str
    write: bool
    idempotency: str  # key | none
    lookup: bool
    timeout_ms: int


@dataclass(frozen=True)
class RunFacts:
    run: RunRow
    events: list[JournalEntry]
    intents: list[IntentEntry] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    letters: list[LetterEntry] = field(default_factory=list)
    tools: Mapping[str, ToolInfo] = field(default_factory=dict)
    # Events the projection lists but Kafka no longer returned (should never happen: the
    # journal is kept forever). Reported, never silently skipped.
    missing_seqs: list[int] = field(default_factory=list)
    resubmission_of: str | None = None

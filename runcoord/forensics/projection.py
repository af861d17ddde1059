"""The run projection as plain values: what one journal event changes in a run's row.

Pure (no Kafka, no SQL), so redelivery and ordering rules are unit-tested here. A run's row is
folded from its events in journal order; an event at or below ``last_seq`` is a redelivery and
changes nothing, which is what makes the projector idempotent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from runcoord.domain import events as ev
from runcoord.domain.phases import TERMINAL, Phase

_TERMINAL_VALUES = frozenset(p.value for p in TERMINAL)
_PHASES = frozenset(p.value for p in Phase)


def input_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    tenant: str
    thread_id: str
    provider: str
    input_hash: str
    partition: int
    first_offset: int
    last_offset: int
    last_seq: int
    phase: str
    accepted_at_ms: int
    updated_at_ms: int
    provider_status: str | None = None
    provider_run_id: str | None = None
    watch_seq: int = 0
    steps: int = 0
    outcome: str | None = None
    finished_at_ms: int | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in _TERMINAL_VALUES


@dataclass(frozen=True, slots=True)
class EventRow:
    run_id: str
    seq: int
    partition: int
    offset: int
    event_type: str
    at_ms: int
    note: str | None


@dataclass(frozen=True, slots=True)
class StepRow:
    """One fact about a step; the projector merges it into the step's row (first write wins)."""

    run_id: str
    step_id: str
    at_ms: int
    opened: bool = False
    deadline_ms: int | None = None
    calls: int = 0
    submission_reason: str | None = None  # set: the submission was requested at at_ms
    outcome: str | None = None  # set: the submission was confirmed at at_ms


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """An approval request as ApprovalRequested made it (pending); the run's tenant with it,
    since the API reads approvals by tenant and the event does not repeat it."""

    run_id: str
    tenant: str
    approval_id: str
    step_id: str
    tool_call_id: str
    tool: str
    arguments_hash: str
    policy_version: str
    request_seq: int
    deadline_ms: int
    requested_at_ms: int


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """An approval's final decision (ApprovalDecided); merged into a pending row only."""

    run_id: str
    approval_id: str
    decision: str  # approve | reject | expired
    reason: str
    approver: str
    decided_at_ms: int


def note(event: ev.JournalEvent) -> str | None:
    """A one-line summary worth indexing (what a scan shows without reading Kafka)."""
    match event:
        case ev.InputIgnored():
            return f"{event.input_kind} {event.ref}: {event.reason}"
        case ev.RunFinished():
            return f"{event.status}: {event.reason}" if event.reason else event.status
        case ev.CancelRequested() | ev.WatchRenewed() | ev.SubmissionRequested():
            return event.reason
        case ev.StepSubmitted():
            return event.outcome
        case ev.RunStatusChanged():
            return event.status
        case ev.ApprovalRequested():
            return f"{event.approval.tool_call_id} ({event.approval.tool}) awaits approval"
        case ev.ApprovalDecided():
            return f"{event.approval_id}: {event.decision} by {event.approver}"
        case ev.ToolOutputRecorded():
            return f"{event.output.tool_call_id} from {event.output.source}" + (
                " (error)" if event.output.is_error else ""
            )
    return None


def event_row(event: ev.JournalEvent, partition: int, offset: int) -> EventRow:
    return EventRow(
        event.run_id, event.seq, partition, offset, type(event).__name__, event.at_ms, note(event)
    )


def step_row(event: ev.JournalEvent) -> StepRow | None:
    match event:
        case ev.StepOpened():
            return StepRow(
                event.run_id,
                event.step_id,
                event.at_ms,
                opened=True,
                deadline_ms=event.deadline_ms,
                calls=len(event.calls),
            )
        case ev.SubmissionRequested():
            return StepRow(event.run_id, event.step_id, event.at_ms, submission_reason=event.reason)
        case ev.StepSubmitted():
            return StepRow(event.run_id, event.step_id, event.at_ms, outcome=event.outcome)
    return None


def approval_row(event: ev.JournalEvent, tenant: str) -> ApprovalRow | DecisionRow | None:
    """What ``event`` of a run of ``tenant`` says about one of its approvals, if anything."""
    match event:
        case ev.ApprovalRequested(approval=a):
            return ApprovalRow(
                event.run_id,
                tenant,
                a.approval_id,
                event.step_id,
                a.tool_call_id,
                a.tool,
                a.arguments_hash,
                a.policy_version,
                event.seq,
                a.deadline_ms,
                a.requested_at_ms,
            )
        case ev.ApprovalDecided():
            return DecisionRow(
                event.run_id,
                event.approval_id,
                event.decision,
                event.reason,
                event.approver,
                event.decided_at_ms,
            )
    return None


def _status_phase(phase: str, status: str) -> str:
    # As the coordinator folds it: while our cancel is pending, working statuses don't move us.
    if phase == Phase.CANCELLING.value and status not in _TERMINAL_VALUES:
        return phase
    return status if status in _PHASES else phase


def fold(row: RunRow | None, event: ev.JournalEvent, partition: int, offset: int) -> RunRow | None:
    """The run's row after ``event``; ``row`` unchanged for a redelivery.

    None when the run's RunAccepted was never seen (the row cannot name its tenant); the
    event is still indexed by the caller, so nothing about it is lost.
    """
    if row is None:
        if not isinstance(event, ev.RunAccepted):
            return None
        return RunRow(
            run_id=event.run_id,
            tenant=event.tenant,
            thread_id=event.thread_id,
            provider=event.provider,
            input_hash=input_hash(event.input),
            partition=partition,
            first_offset=offset,
            last_offset=offset,
            last_seq=event.seq,
            phase=Phase.CREATING.value,
            accepted_at_ms=event.at_ms,
            updated_at_ms=event.at_ms,
        )
    if event.seq <= row.last_seq:
        return row
    row = replace(
        row,
        last_seq=event.seq,
        last_offset=max(row.last_offset, offset),
        updated_at_ms=max(row.updated_at_ms, event.at_ms),
    )
    if isinstance(event, ev.WATCH_STARTERS):
        row = replace(row, watch_seq=event.seq)
    return _apply(row, event)


def _apply(row: RunRow, event: ev.JournalEvent) -> RunRow:
    if row.terminal and not isinstance(event, ev.ProviderRunCreated):
        return row
    match event:
        case ev.ProviderRunCreated():
            phase = row.phase
            if phase != Phase.CANCELLING.value and not row.terminal:
                phase = Phase.QUEUED.value if event.status == "queued" else Phase.IN_PROGRESS.value
            return replace(
                row,
                phase=phase,
                provider_run_id=event.provider_run_id,
                provider_status=event.status,
            )
        case ev.RunStatusChanged():
            return replace(
                row, phase=_status_phase(row.phase, event.status), provider_status=event.status
            )
        case ev.StepOpened():
            return replace(
                row,
                phase=Phase.REQUIRES_ACTION.value,
                provider_status="requires_action",
                steps=row.steps + 1,
            )
        case ev.SubmissionRequested():
            return replace(row, phase=Phase.SUBMITTING.value)
        case ev.StepSubmitted():
            return replace(row, provider_run_id=event.new_provider_run_id or row.provider_run_id)
        case ev.CancelRequested():
            return replace(row, phase=Phase.CANCELLING.value)
        case ev.RunFinished():
            return replace(
                row,
                phase=event.status if event.status in _PHASES else Phase.FAILED.value,
                outcome=event.reason or event.status,
                finished_at_ms=event.at_ms,
            )
    return row

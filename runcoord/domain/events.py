"""Journal events: the facts appended to ``runs.events``. A run's state is their fold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runcoord.domain.model import Approval, Output, ParkedDecision, ToolCall


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    run_id: str
    seq: int
    at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAccepted(Event):
    tenant: str
    thread_id: str
    assistant_id: str
    provider: str
    input: str
    run_deadline_ms: int
    create_key: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderRunCreated(Event):
    provider_run_id: str
    status: str
    expires_at_ms: int | None
    reconciled: bool
    provider_thread_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStatusChanged(Event):
    status: str
    # The step this observation closed without our submission reaching it, if any.
    closed_step: str | None
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOpened(Event):
    step_id: str
    calls: tuple[ToolCall, ...]
    deadline_ms: int
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutputRecorded(Event):
    step_id: str
    output: Output
    effect_key: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmissionRequested(Event):
    step_id: str
    effect_key: str
    reason: str  # complete | deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSubmitted(Event):
    step_id: str
    outcome: str
    attempts: int
    new_provider_run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchRenewed(Event):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested(Event):
    reason: str
    give_up_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    status: str
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested(Event):
    """A call of the open step waits for a person's decision instead of being dispatched. The
    step's deadline and the run's budget move out to leave the decision its time."""

    step_id: str
    approval: Approval
    step_deadline_ms: int
    run_deadline_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecided(Event):
    """The approval's final decision: approve | reject (a person's) or expired (nobody's in
    time, or the approval rules changed under it: ``approver`` says which)."""

    step_id: str
    approval_id: str
    decision: str
    reason: str
    approver: str
    decided_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecisionParked(Event):
    """A decision for a request not journaled yet, kept until it is."""

    decision: ParkedDecision


@dataclass(frozen=True, slots=True, kw_only=True)
class InputIgnored(Event):
    input_kind: str
    ref: str
    reason: str


JournalEvent = (
    RunAccepted
    | ProviderRunCreated
    | RunStatusChanged
    | StepOpened
    | ToolOutputRecorded
    | SubmissionRequested
    | StepSubmitted
    | WatchRenewed
    | CancelRequested
    | RunFinished
    | InputIgnored
    | ApprovalRequested
    | ApprovalDecided
    | ApprovalDecisionParked
)

# Events after which the executor is asked to watch the provider again; the watch is named by
# the event's seq, so an observation names the watch it answers and a stale one is recognised.
WATCH_STARTERS: tuple[type[Event], ...] = (
    ProviderRunCreated,
    RunStatusChanged,
    StepOpened,
    WatchRenewed,
    CancelRequested,
)

"""The run's state: a frozen value, changed only by folding events (see evolve.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runcoord.domain.phases import TERMINAL, Phase


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the provider's JSON text, passed on untouched


@dataclass(frozen=True, slots=True)
class Output:
    tool_call_id: str
    output: str
    is_error: bool
    # tool | policy | deadline | intake | executor: who produced this output (forensics, metrics)
    source: str
    payload_hash: str


@dataclass(frozen=True, slots=True)
class Approval:
    """A call waiting for (or past) a person's decision. ``decision``: None while pending,
    then approve | reject | expired; the first one recorded is final."""

    approval_id: str
    tool_call_id: str
    tool: str
    arguments_hash: str
    policy_version: str
    deadline_ms: int
    requested_at_ms: int
    decision: str | None = None
    reason: str | None = None
    approver: str | None = None
    decided_at_ms: int | None = None

    @property
    def pending(self) -> bool:
        return self.decision is None


@dataclass(frozen=True, slots=True)
class ParkedDecision:
    """A decision that came before its approval request was journaled: kept, and applied
    when the request is (never lost, never applied twice)."""

    approval_id: str
    decision: str
    reason: str
    approver: str
    arguments_hash: str
    policy_version: str
    decided_at_ms: int


@dataclass(frozen=True, slots=True)
class Step:
    step_id: str
    calls: tuple[ToolCall, ...]
    deadline_ms: int
    outputs: tuple[Output, ...] = ()
    submission_key: str | None = None  # set once the submission intent is out
    submitted: str | None = None  # the executor's outcome, once confirmed
    approvals: tuple[Approval, ...] = ()

    def approval(self, approval_id: str) -> Approval | None:
        return next((a for a in self.approvals if a.approval_id == approval_id), None)

    def approval_of(self, tool_call_id: str) -> Approval | None:
        return next((a for a in self.approvals if a.tool_call_id == tool_call_id), None)

    @property
    def call_ids(self) -> frozenset[str]:
        return frozenset(c.id for c in self.calls)

    def output_for(self, tool_call_id: str) -> Output | None:
        return next((o for o in self.outputs if o.tool_call_id == tool_call_id), None)

    @property
    def submission_out(self) -> bool:
        """Its submission intent is out and its outcome not yet confirmed."""
        return self.submission_key is not None and self.submitted is None

    @property
    def missing(self) -> tuple[ToolCall, ...]:
        answered = {o.tool_call_id for o in self.outputs}
        return tuple(c for c in self.calls if c.id not in answered)


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: str
    tenant: str
    thread_id: str
    assistant_id: str
    provider: str  # assistants | responses
    input: str
    accepted_at_ms: int
    run_deadline_ms: int
    seq: int = 0  # the sequence number of the last event folded in
    phase: Phase = Phase.CREATING
    create_key: str = ""
    provider_run_id: str | None = None
    # The provider's thread, when it is not thread_id (a conversation runcoord created).
    provider_thread_id: str | None = None
    provider_status: str | None = None
    expires_at_ms: int | None = None
    watch: int = 0  # the seq of the event that started the current watch; 0 = none
    watch_started_ms: int = 0
    step: Step | None = None  # the open (or last) step
    closed_steps: tuple[str, ...] = ()
    cancel_reason: str | None = None
    give_up_at_ms: int | None = None  # set when we asked to cancel: past it we stop waiting
    outcome: str | None = None  # terminal reason
    updated_at_ms: int = field(default=0)
    parked: tuple[ParkedDecision, ...] = ()  # decisions that came before their request
    # The metadata the turn was accepted with: a follow-up the provider needs it restated on
    # (Responses) gets it from the submission intent, not from a read of the step.
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def provider_thread(self) -> str:
        """The thread (or conversation) the provider knows the run by."""
        return self.provider_thread_id or self.thread_id

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def open_step(self) -> Step | None:
        if self.step is None or self.step.step_id in self.closed_steps:
            return None
        return self.step

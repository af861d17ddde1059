"""Inputs to a run: commands, observations from executors, tool results, and timer ticks.

Each input names what it refers to (an effect key, a watch, a step and tool call), so a
duplicate, late or out-of-order delivery is recognised and applied once or ignored with a
reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runcoord.domain.model import ToolCall


@dataclass(frozen=True, slots=True)
class StartRun:
    run_id: str
    tenant: str
    thread_id: str
    assistant_id: str
    provider: str
    input: str
    requested_at_ms: int
    # Passed to the provider's run as its metadata (OpenAI: 16 keys, values up to 512 chars).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # True: thread_id is the tenant's own conversation id (the agent API), and the provider
    # thread or conversation is runcoord's to create. False: thread_id is the provider's.
    conversation: bool = False


@dataclass(frozen=True, slots=True)
class CancelRun:
    run_id: str
    tenant: str
    reason: str


@dataclass(frozen=True, slots=True)
class Sighting:
    """A state of the provider run that a write saw on its own answer (a streamed create or
    submission follows the run until the model stops working): what the next watch would
    report, sooner."""

    status: str
    step_id: str | None
    tool_calls: tuple[ToolCall, ...]
    expires_at_ms: int | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class RunCreated:
    """The create-run effect's outcome: the provider's run exists (created or reconciled)."""

    run_id: str
    effect_key: str
    provider_run_id: str
    status: str
    expires_at_ms: int | None
    reconciled: bool
    # The provider thread (or conversation) the run lives in, when runcoord chose it.
    provider_thread_id: str | None = None
    # Where the run was when the create stopped following it (past the working phase).
    seen: Sighting | None = None


@dataclass(frozen=True, slots=True)
class RunObserved:
    """What a watch saw: the provider's status once it differed from the watch's start."""

    run_id: str
    watch: int
    status: str  # vendor-neutral: queued | in_progress | requires_action | cancelling | terminal…
    step_id: str | None
    tool_calls: tuple[ToolCall, ...]
    expires_at_ms: int | None
    detail: str | None  # last_error / incomplete_details, for terminal statuses
    changed: bool  # False when the watch timed out without a change


@dataclass(frozen=True, slots=True)
class ToolResult:
    run_id: str
    tenant: str
    step_id: str
    tool_call_id: str
    output: str
    is_error: bool
    source: str  # tool | intake
    effect_key: str | None


@dataclass(frozen=True, slots=True)
class SubmissionResult:
    run_id: str
    effect_key: str
    step_id: str
    # submitted | already_submitted | run_moved_on | rejected
    outcome: str
    attempts: int
    detail: str | None
    # Responses: the follow-up response that carried the outputs is the turn's new run.
    new_provider_run_id: str | None = None
    # Where the run went after taking the outputs, when the submission followed it.
    seen: Sighting | None = None


@dataclass(frozen=True, slots=True)
class EffectFailed:
    """An effect the executor gave up on (a permanent provider error, an exhausted budget)."""

    run_id: str
    effect_key: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """A person's decision on an approval request (the agent API writes it). It names what
    the approver saw, the call's arguments hash and the rules' version: if either is not the
    request's, the decision is refused (fail closed)."""

    run_id: str
    tenant: str
    approval_id: str
    decision: str  # approve | reject
    reason: str
    approver: str
    arguments_hash: str
    policy_version: str
    decided_at_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the loop's timer wheel found this run due. Never on a topic."""

    run_id: str


Input = (
    StartRun
    | CancelRun
    | RunCreated
    | RunObserved
    | ToolResult
    | SubmissionResult
    | EffectFailed
    | ApprovalDecision
    | Tick
)

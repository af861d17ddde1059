"""The provider port: what the effect executors need from a model provider, vendor-neutral.

A *run* is one user turn; it pauses in ``requires_action`` at a *step* that needs tool
outputs, takes one submission per step, and ends in a terminal status. Each adapter
(``assistants.py``, ``responses.py``) maps this onto one of OpenAI's APIs and reconciles
its writes after an unknown outcome (see README.md in this folder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from runcoord.domain.inputs import Sighting
from runcoord.domain.model import Output, ToolCall
from runcoord.domain.phases import TERMINAL

# The vendor-neutral statuses a ProviderRun carries.
STATUSES: frozenset[str] = frozenset(
    {
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
        "cancelled",
        "failed",
        "completed",
        "incomplete",
        "expired",
    }
)
# A provider run's terminal statuses are the run's terminal phases, by the same names.
TERMINAL_STATUSES: frozenset[str] = frozenset(str(phase) for phase in TERMINAL)
# The model is working: nothing for the coordinator to decide (see polling.changed).
WORKING_STATUSES: frozenset[str] = frozenset({"queued", "in_progress"})

# How an adapter learns of a run's changes: polling, or the provider's event streams (the
# Responses adapter watches by a response's stream; the Assistants adapter follows the stream
# a streamed create or submission answers with).
Observe = Literal["poll", "stream"]
OBSERVE_MODES: tuple[Observe, ...] = ("poll", "stream")
# How long a streamed create or submission follows the run for its next state: past it,
# the run is left to the coordinator's watch (a model step slower than this is polled).
FOLLOW_MS = 5_000

# The metadata keys the adapters put on what they create. Never change them: reconciliation
# of a run created by an earlier version looks for exactly these keys.
RUN_ID_KEY = "runcoord_run_id"
# On a thread or conversation runcoord created for one of a tenant's conversations: its id.
CONVERSATION_KEY = "runcoord_conversation"
STEP_KEY = "runcoord_step"


def run_metadata(
    given: Mapping[str, str] | None, run_id: str, step: str | None = None
) -> dict[str, str]:
    """The turn's metadata with ours on top: a caller's tag never hides our run id."""
    ours = {RUN_ID_KEY: run_id} if step is None else {RUN_ID_KEY: run_id, STEP_KEY: step}
    return {**(given or {}), **ours}


@dataclass(frozen=True, slots=True)
class Turn:
    """What a turn was created with (``create_run``'s ``assistant_id`` and ``metadata``), for
    an adapter whose next write restates it: a Responses follow-up names its model and
    carries the turn's metadata, and reading them back from the step costs a request."""

    run_id: str
    assistant_id: str
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ProviderRun:
    provider_run_id: str
    status: str  # one of STATUSES
    # The step waiting for outputs (requires_action only). Stable across polls of the same
    # step: the coordinator correlates outputs by (step_id, tool_call_id).
    step_id: str | None
    tool_calls: tuple[ToolCall, ...]
    expires_at_ms: int | None
    detail: str | None  # why a run ended (last_error, incomplete_details), if it says
    poll_after_ms: int | None  # the provider's openai-poll-after-ms hint, if it sent one

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


# submitted: this call's submission was accepted.
# already_submitted: the step's outputs were accepted earlier (a previous attempt).
# run_moved_on: the step can no longer take outputs (the run expired, was cancelled, failed).
# rejected: the provider refused these outputs and the step still waits (detail says why).
# not_submitted: only from reconcile_submission: the provider shows the step still waiting
#   and unanswered, so sending the outputs (again) is safe.
SubmitStatus = Literal[
    "submitted", "already_submitted", "run_moved_on", "rejected", "not_submitted"
]


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    outcome: SubmitStatus
    detail: str | None = None
    # Responses only: a submission creates the follow-up response, which becomes the run's
    # current provider_run_id. None when the run keeps its id (Assistants) or when the id
    # cannot be recovered (see responses.py, reconcile_submission).
    new_provider_run_id: str | None = None
    # Where the run went after taking the outputs, when the adapter followed it (a streamed
    # submission): its first state past the working phase, else None.
    seen: ProviderRun | None = None


def sighting(run: ProviderRun | None) -> Sighting | None:
    """What a write saw of the run, as the coordinator takes it: only a state past the
    working phase is news (inputs.Sighting)."""
    if run is None or run.status in WORKING_STATUSES:
        return None
    return Sighting(run.status, run.step_id, run.tool_calls, run.expires_at_ms, run.detail)


class RunProvider(Protocol):
    """One provider API. Errors raised are runcoord.provider.errors types, never the SDK's."""

    name: str  # "assistants" | "responses": RunState.provider

    async def create_thread(
        self, *, conversation: str, effect_key: str, metadata: Mapping[str, str]
    ) -> str:
        """A new provider thread (Assistants) or conversation (Responses) for one of our
        conversations; its id. Sent with Idempotency-Key = ``effect_key``: a repeat after a
        lost answer gets the same container from a provider that honours the key. Raises
        OutcomeUnknown when the answer was lost (no API lists threads to look it up)."""
        ...

    async def create_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        assistant_id: str,
        input: str,
        effect_key: str,
        metadata: Mapping[str, str] | None = None,
        after_unknown_outcome: bool = False,
    ) -> tuple[ProviderRun, bool]:
        """Start the turn, or find the one an earlier attempt started: (run, reconciled).

        ``metadata`` (the turn's own tags) goes on the provider run next to ours; our keys
        (RUN_ID_KEY, STEP_KEY) win over the caller's.

        Pass ``after_unknown_outcome=True`` when an earlier attempt with this effect key may
        have been applied (it raised OutcomeUnknown, or its executor died mid-call). Raises
        Unreconcilable when the provider cannot say whether that attempt created something.

        An adapter that follows its writes (a streamed create) returns the run as it last
        saw it, which may be past the working phase (waiting on its first step, or ended).
        """
        ...

    async def retrieve(self, *, thread_id: str, provider_run_id: str) -> ProviderRun: ...

    async def watch(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        since_status: str,
        since_step: str | None,
        timeout_ms: int,
    ) -> tuple[ProviderRun, bool]:
        """Watch (poll, or follow the event stream) until (status, step_id) differs from
        (since_status, since_step): (run, True); or until ``timeout_ms`` passes: (the last
        run seen, False)."""
        ...

    async def submit_outputs(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        step_id: str,
        outputs: Sequence[Output],
        effect_key: str,
        turn: Turn | None = None,
        unanswered: bool = False,
    ) -> SubmitOutcome:
        """All of the step's outputs in one submission. Raises OutcomeUnknown when the
        request may have been applied without us seeing the answer: call
        reconcile_submission before sending again. ``turn``: what the turn was created with,
        when known (an adapter that needs it and is not given it reads it from the step).
        ``unanswered``: the caller vouches that nothing has answered the step's calls: no
        earlier request of this submission was sent (the effect ledger says so), and nothing
        else answers a step while its submission is out (the coordinator holds a cancel
        until the submission's outcome). An adapter that looks before sending need not."""
        ...

    async def reconcile_submission(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        step_id: str,
        outputs: Sequence[Output],
    ) -> SubmitOutcome | None:
        """After an unknown outcome: already_submitted, run_moved_on or not_submitted, read
        from the provider's records; None when they cannot tell."""
        ...

    async def cancel(self, *, thread_id: str, provider_run_id: str) -> str:
        """Ask the provider to stop the run; returns the status it is in afterwards."""
        ...


async def rejected_submission(
    provider: RunProvider,
    message: str,
    thread_id: str,
    provider_run_id: str,
    step_id: str,
    outputs: Sequence[Output],
) -> SubmitOutcome:
    """What a submission refused by the provider (HTTP 400) means. A provider answers 400
    alike to outputs already submitted (a racing attempt), to a run that moved on, and to
    outputs that do not match the step; only its own records tell which."""
    verdict = await provider.reconcile_submission(
        thread_id=thread_id, provider_run_id=provider_run_id, step_id=step_id, outputs=outputs
    )
    if verdict is not None and verdict.outcome in ("already_submitted", "run_moved_on"):
        return SubmitOutcome(verdict.outcome, f"{message} ({verdict.detail})")
    return SubmitOutcome("rejected", message)

"""Folding one event into a run's state. The only way state changes.

Like eventsourcing's ``mutate``: check the event belongs to this run and carries the next
sequence number, then apply it. A violation is a bug (or a corrupt journal), never ignored.
"""

from __future__ import annotations

from dataclasses import replace

from runcoord.domain import events as ev
from runcoord.domain.model import RunState, Step
from runcoord.domain.phases import TERMINAL, Phase, Trigger, advance

# Vendor-neutral provider statuses and the trigger each one fires.
STATUS_TRIGGER: dict[str, Trigger] = {
    "queued": Trigger.OBSERVE_QUEUED,
    "in_progress": Trigger.OBSERVE_IN_PROGRESS,
    "cancelling": Trigger.OBSERVE_CANCELLING,
    "completed": Trigger.FINISH_COMPLETED,
    "failed": Trigger.FINISH_FAILED,
    "cancelled": Trigger.FINISH_CANCELLED,
    "expired": Trigger.FINISH_EXPIRED,
    "incomplete": Trigger.FINISH_INCOMPLETE,
}
TERMINAL_STATUSES = frozenset(p.value for p in TERMINAL)


class JournalError(ValueError):
    """An event does not fit the state it is folded into: wrong run, gap, or duplicate."""


def _status_phase(phase: Phase, status: str) -> Phase:
    # While our cancel is pending, the provider's working statuses do not move us back.
    if phase is Phase.CANCELLING and status not in TERMINAL_STATUSES:
        return phase
    return advance(phase, STATUS_TRIGGER[status])


def _close(state: RunState, step_id: str | None) -> tuple[str, ...]:
    if step_id is None or step_id in state.closed_steps:
        return state.closed_steps
    return (*state.closed_steps, step_id)


def evolve(state: RunState | None, event: ev.JournalEvent) -> RunState:
    if isinstance(event, ev.RunAccepted):
        if state is not None or event.seq != 1:
            raise JournalError(f"run {event.run_id}: RunAccepted must be event 1 of a new run")
        return RunState(
            run_id=event.run_id,
            tenant=event.tenant,
            thread_id=event.thread_id,
            assistant_id=event.assistant_id,
            provider=event.provider,
            input=event.input,
            accepted_at_ms=event.at_ms,
            run_deadline_ms=event.run_deadline_ms,
            create_key=event.create_key,
            seq=1,
            updated_at_ms=event.at_ms,
            metadata=dict(event.metadata),
        )
    if state is None:
        raise JournalError(f"run {event.run_id}: {type(event).__name__} before RunAccepted")
    if event.run_id != state.run_id:
        raise JournalError(f"event of run {event.run_id} folded into run {state.run_id}")
    if event.seq != state.seq + 1:
        raise JournalError(f"run {state.run_id}: event seq {event.seq} after {state.seq}")
    state = replace(state, seq=event.seq, updated_at_ms=event.at_ms)
    if isinstance(event, ev.WATCH_STARTERS):
        state = replace(state, watch=event.seq, watch_started_ms=event.at_ms)
    return _apply(state, event)


def _apply(state: RunState, event: ev.JournalEvent) -> RunState:
    match event:
        case ev.ProviderRunCreated():
            phase = state.phase
            # Recorded after a local finish too (an orphan we cancel): the phase stays put.
            if phase is not Phase.CANCELLING and not state.terminal:
                phase = Phase.QUEUED if event.status == "queued" else Phase.IN_PROGRESS
            return replace(
                state,
                phase=phase,
                provider_run_id=event.provider_run_id,
                provider_thread_id=event.provider_thread_id,
                provider_status=event.status,
                expires_at_ms=event.expires_at_ms,
            )
        case ev.RunStatusChanged():
            return replace(
                state,
                phase=_status_phase(state.phase, event.status),
                provider_status=event.status,
                closed_steps=_close(state, event.closed_step),
                expires_at_ms=event.expires_at_ms or state.expires_at_ms,
            )
        case ev.StepOpened():
            previous = state.step.step_id if state.step else None
            return replace(
                state,
                phase=advance(state.phase, Trigger.OPEN_STEP),
                provider_status="requires_action",
                closed_steps=_close(state, previous),
                step=Step(step_id=event.step_id, calls=event.calls, deadline_ms=event.deadline_ms),
                expires_at_ms=event.expires_at_ms or state.expires_at_ms,
            )
        case ev.ToolOutputRecorded():
            step = _current(state, event.step_id)
            return replace(state, step=replace(step, outputs=(*step.outputs, event.output)))
        case ev.SubmissionRequested():
            step = _current(state, event.step_id)
            return replace(
                state,
                phase=advance(state.phase, Trigger.SUBMIT),
                step=replace(step, submission_key=event.effect_key),
            )
        case ev.StepSubmitted():
            step = _current(state, event.step_id)
            return replace(
                state,
                step=replace(step, submitted=event.outcome),
                provider_run_id=event.new_provider_run_id or state.provider_run_id,
            )
        case ev.CancelRequested():
            return replace(
                state,
                phase=advance(state.phase, Trigger.REQUEST_CANCEL),
                cancel_reason=event.reason,
                give_up_at_ms=event.give_up_at_ms,
            )
        case ev.RunFinished():
            return replace(
                state,
                phase=advance(state.phase, STATUS_TRIGGER[event.status]),
                provider_status=event.status if state.provider_run_id else state.provider_status,
                outcome=event.reason,
                closed_steps=_close(state, state.step.step_id if state.step else None),
            )
        case ev.ApprovalRequested():
            step = _current(state, event.step_id)
            return replace(
                state,
                step=replace(
                    step,
                    approvals=(*step.approvals, event.approval),
                    deadline_ms=event.step_deadline_ms,
                ),
                run_deadline_ms=event.run_deadline_ms,
            )
        case ev.ApprovalDecided():
            step = _current(state, event.step_id)
            decided = tuple(
                replace(
                    a,
                    decision=event.decision,
                    reason=event.reason,
                    approver=event.approver,
                    decided_at_ms=event.decided_at_ms,
                )
                if a.approval_id == event.approval_id
                else a
                for a in step.approvals
            )
            parked = tuple(p for p in state.parked if p.approval_id != event.approval_id)
            return replace(state, step=replace(step, approvals=decided), parked=parked)
        case ev.ApprovalDecisionParked():
            return replace(state, parked=(*state.parked, event.decision))
        case ev.WatchRenewed() | ev.InputIgnored():
            return state
    raise JournalError(f"unknown event type {type(event).__name__}")


def _current(state: RunState, step_id: str) -> Step:
    if state.step is None or state.step.step_id != step_id:
        raise JournalError(f"run {state.run_id}: event for step {step_id}, not the current step")
    return state.step


def fold(events: list[ev.JournalEvent]) -> RunState | None:
    state: RunState | None = None
    for event in events:
        state = evolve(state, event)
    return state

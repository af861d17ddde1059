"""Assistants API objects (the SDK's Run and RunStep) read as the port's values. Pure.

The step id of a ``requires_action`` run is the id of its run step of type ``tool_calls``
(found by its tool call ids), not a derivation: it is the provider's own, stable for as long
as the step exists, and the same id the provider's run steps, records and logs use, so a
step can be followed across systems. It costs one steps list per step, cached by the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openai.types.beta.threads import Run
from openai.types.beta.threads.runs import RunStep

from runcoord.domain.model import ToolCall
from runcoord.provider.port import RUN_ID_KEY, TERMINAL_STATUSES, ProviderRun, SubmitOutcome

# The run events that say it is working (their status is the name's): a follow of a write
# skips them by name, since each carries the whole run, tools and all.
WORKING_RUN_EVENTS = frozenset(
    {"thread.run.created", "thread.run.queued", "thread.run.in_progress"}
)


def ours(run: Run, run_id: str) -> bool:
    return (run.metadata or {}).get(RUN_ID_KEY) == run_id


def tool_calls(run: Run) -> tuple[ToolCall, ...]:
    if run.status != "requires_action" or run.required_action is None:
        return ()
    return tuple(
        ToolCall(call.id, call.function.name, call.function.arguments)
        for call in run.required_action.submit_tool_outputs.tool_calls
    )


def step_call_ids(step: RunStep) -> frozenset[str]:
    details = step.step_details
    if details.type != "tool_calls":
        return frozenset()
    return frozenset(call.id for call in details.tool_calls)


def streamed_step_calls(step: Mapping[str, Any]) -> frozenset[str]:
    """The call ids of a run step as a stream event carries it (a plain dict: steps are
    not worth the SDK's model on every event); empty unless it is a tool_calls step."""
    details = step.get("step_details") or {}
    if details.get("type") != "tool_calls":
        return frozenset()
    return frozenset(str(call["id"]) for call in details.get("tool_calls") or ())


def waiting_call_ids(run: Run) -> frozenset[str]:
    return frozenset(call.id for call in tool_calls(run))


def is_waiting_step(run: Run, step: RunStep) -> bool:
    """Is ``step`` the tool_calls step whose calls the run is waiting on?"""
    wanted = waiting_call_ids(run)
    return bool(wanted) and step.type == "tool_calls" and step_call_ids(step) == wanted


def detail(run: Run) -> str | None:
    if run.last_error is not None:
        return f"{run.last_error.code}: {run.last_error.message}"
    if run.incomplete_details is not None and run.incomplete_details.reason is not None:
        return f"incomplete: {run.incomplete_details.reason}"
    return None


def to_provider_run(run: Run, *, step_id: str | None, poll_after: int | None) -> ProviderRun:
    return ProviderRun(
        provider_run_id=run.id,
        status=run.status,
        step_id=step_id if run.status == "requires_action" else None,
        tool_calls=tool_calls(run),
        expires_at_ms=None if run.expires_at is None else run.expires_at * 1000,
        detail=detail(run),
        poll_after_ms=poll_after,
    )


def submission_verdict(
    run: Run, waiting_step: str | None, step: RunStep | None, step_id: str
) -> SubmitOutcome | None:
    """Did outputs for ``step_id`` land? Read from the run, the step it waits on, and the step.

    ``step`` is None when the provider does not know the step: then nothing can be said.
    """
    if waiting_step == step_id:
        return SubmitOutcome("not_submitted", f"run {run.id} still waits on step {step_id}")
    if step is None:
        return None
    where = f"step {step_id} is {step.status}, run {run.id} is {run.status}"
    if step.status == "completed":
        # A tool_calls step completes only when its outputs were accepted.
        return SubmitOutcome("already_submitted", where)
    if step.status in ("expired", "cancelled", "failed"):
        return SubmitOutcome("run_moved_on", where)
    if run.status in TERMINAL_STATUSES or run.status == "cancelling":
        return SubmitOutcome("run_moved_on", where)
    return None

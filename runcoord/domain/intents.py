"""Effect intents: what the coordinator asks executors to do, written to ``effects``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runcoord.domain.model import Output


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    effect_key: str
    run_id: str
    tenant: str
    thread_id: str
    provider: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateRunIntent(Intent):
    assistant_id: str
    input: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # thread_id is the tenant's conversation: find or create its provider thread first.
    conversation: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ObserveRunIntent(Intent):
    watch: int
    provider_run_id: str
    since_status: str
    since_step: str | None
    timeout_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndWatchIntent(Intent):
    """Stop the run's watch numbered ``watch``: the run finished by other news.

    That news is a submission's or a create's own answer, or a timer. The watch has nothing
    left to report, and polling on for it would only cost requests."""

    watch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallIntent(Intent):
    step_id: str
    tool_call_id: str
    tool: str
    arguments: str
    deadline_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitOutputsIntent(Intent):
    provider_run_id: str
    step_id: str
    outputs: tuple[Output, ...]
    deadline_ms: int
    # What the turn was created with, for a provider whose follow-up restates it (a
    # Responses follow-up names its model and carries the turn's metadata). Empty in an
    # intent written before v2: the adapter then reads them from the step.
    assistant_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRunIntent(Intent):
    provider_run_id: str
    reason: str


def log_ids(intent: Intent) -> dict[str, str]:
    """The correlation ids a log line about an intent carries (see runcoord.logs)."""
    ids = {"run_id": intent.run_id, "thread_id": intent.thread_id, "effect_key": intent.effect_key}
    tool_call_id = getattr(intent, "tool_call_id", None)
    if tool_call_id:
        ids["tool_call_id"] = tool_call_id
    return ids


EffectIntent = (
    CreateRunIntent
    | ObserveRunIntent
    | EndWatchIntent
    | ToolCallIntent
    | SubmitOutputsIntent
    | CancelRunIntent
)

# The `kind` header on `effects`, so each executor reads only its own kinds without decoding.
KIND: dict[type[Intent], str] = {
    CreateRunIntent: "create_run",
    ObserveRunIntent: "observe_run",
    EndWatchIntent: "end_watch",
    ToolCallIntent: "tool_call",
    SubmitOutputsIntent: "submit_outputs",
    CancelRunIntent: "cancel_run",
}


def stale(intent: Intent, issued_at_ms: int | None, now_ms: int) -> bool:
    """A watch picked up after its own timeout: the coordinator stops waiting for its report
    then (its timer renews the watch at timeout + grace), so running it now only adds polls
    and a late report that is ignored. After a replica restart or under a backlog those are
    most of the queue, and executing them is what keeps the backlog from draining.

    No other intent goes stale: each one's result is awaited, and the ledger or
    reconciliation makes a late repeat harmless.
    """
    if not isinstance(intent, ObserveRunIntent) or issued_at_ms is None:
        return False
    return now_ms - issued_at_ms >= intent.timeout_ms

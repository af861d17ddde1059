"""Sentences a support engineer understands, from the facts of one tool call or one step.

Each explanation says what happened and what it means for the customer ("one ticket exists"),
inferring only what the records prove. Where a record cannot prove something (the ledger keeps
the latest send, not every attempt), the wording says what was observed, not more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runcoord.domain.model import Output, ToolCall
from runcoord.forensics.facts import AuditEntry, LedgerEntry, ToolInfo

# What one action of a write tool leaves in the world, for "one ticket exists".
NOUNS = {
    "create_ticket": "ticket",
    "send_email": "email",
    "charge_card": "charge",
    "update_crm": "CRM update",
    "post_note": "note",
}


def seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s"


def _identifier(response: Any) -> str | None:
    """The first ``*_id`` value of a tool's answer (TCK-0000012, msg-…), if any."""
    if isinstance(response, dict):
        for key, value in response.items():
            if key.endswith("_id") and isinstance(value, str):
                return value
    return None


def _error_type(output: Output) -> str | None:
    if not output.is_error:
        return None
    try:
        body = json.loads(output.output)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("type")) if isinstance(error, dict) and error.get("type") else None


@dataclass(frozen=True, slots=True)
class CallFacts:
    call: ToolCall
    step_id: str
    effect_key: str
    dispatched_at_ms: int | None  # when the intent went out; None: refused by policy
    tool: ToolInfo | None
    ledger: LedgerEntry | None
    actions: Sequence[AuditEntry]
    output: Output | None
    output_at_ms: int | None


@dataclass(frozen=True, slots=True)
class CallStory:
    tool_call_id: str
    tool: str
    effect_key: str
    actions: int  # rows in the gateway's audit log: what really happened
    outcome: str  # succeeded | error | unknown | no_output
    retried: bool
    duplicate: bool
    explanation: str


def explain_call(f: CallFacts) -> CallStory:
    name = f.call.name
    noun = NOUNS.get(name, "action")
    spec = f.tool
    write = spec.write if spec else name in NOUNS
    parts: list[str] = []
    retried = False
    if f.dispatched_at_ms is None:
        parts.append(f"tool {name} was not dispatched")
    elif spec is None:
        parts.append(f"tool {name} (not in the registry) was dispatched")
    else:
        how = "takes idempotency keys" if spec.idempotency == "key" else "takes no idempotency key"
        kind = "write" if spec.write else "read"
        parts.append(f"tool {name} ({kind}, {how}) was dispatched")

    led = f.ledger
    if led is not None:
        if led.attempts > 1:
            parts.append(
                f"an executor's lease lapsed {led.attempts - 1} time(s) and the call was taken "
                f"over with fencing token {led.fencing_token}"
            )
        timeout_ms = spec.timeout_ms if spec else None
        waited = (led.sent_at_ms - led.claimed_at_ms) if led.sent_at_ms is not None else 0
        if timeout_ms and led.attempts == 1 and waited >= 0.9 * timeout_ms:
            retried = True
            if spec is not None and spec.idempotency == "key":
                parts.append(
                    f"it timed out after {seconds(timeout_ms)}; retried with the same "
                    "idempotency key"
                )
            else:
                parts.append(f"it timed out after {seconds(timeout_ms)} and was sent again")
        if led.state == "unknown":
            lookup = "a lookup" if spec and spec.lookup else "no lookup"
            parts.append(
                f"its outcome is unknown: {name} takes no idempotency key and has {lookup}, so it "
                "was not sent again, and the model was told the action may have happened"
            )
    elif f.dispatched_at_ms is not None:
        parts.append("no executor claimed it")

    n = len(f.actions)
    duplicate = False
    if write:
        unknown = led is not None and led.state == "unknown"
        if n == 0:
            parts.append(f"the gateway's audit log shows no {noun} was made")
        elif n == 1:
            ident = _identifier(f.actions[0].response)
            if retried and spec is not None and spec.idempotency == "key":
                returned = f" ({ident})" if ident else ""
                parts.append(f"the gateway returned the first {noun}{returned}")
            if unknown:
                parts.append(f"the gateway's audit log shows it did act: one {noun} exists")
            else:
                parts.append(f"one {noun} exists")
        else:
            duplicate = True
            keys = {a.idempotency_key for a in f.actions}
            same = "with the same idempotency key" if len(keys) == 1 else "under different keys"
            parts.append(f"DUPLICATE: the gateway acted {n} times {same}: {n} {noun}s exist")

    outcome = "no_output"
    if f.output is not None:
        error_type = _error_type(f.output)
        if led is not None and led.state == "unknown":
            outcome = "unknown"
        elif f.output.is_error:
            outcome = "error"
            by = {"deadline": "the step deadline", "policy": "policy", "intake": "output intake"}
            who = by.get(f.output.source, "the tool")
            parts.append(f"the model got an error ({error_type or 'error'}) from {who}")
        else:
            outcome = "succeeded"
    else:
        parts.append("no output was recorded for it")
    text = "; ".join(parts) + "."
    return CallStory(f.call.id, name, f.effect_key, n, outcome, retried, duplicate, text)


@dataclass(frozen=True, slots=True)
class StepFacts:
    step_id: str
    opened_at_ms: int
    deadline_ms: int
    calls: int
    submission_at_ms: int | None
    submission_reason: str | None
    submitted_at_ms: int | None
    outcome: str | None
    attempts: int | None
    closed_without_us: bool


def explain_step(f: StepFacts) -> str:
    budget = f.deadline_ms - f.opened_at_ms
    parts = [f"step {f.step_id} asked for {f.calls} tool call(s), deadline {seconds(budget)}"]
    if f.submission_at_ms is None:
        if f.closed_without_us:
            parts.append("the provider closed it before we submitted (answered elsewhere)")
        else:
            parts.append("its outputs were never submitted")
    else:
        took = f.submission_at_ms - f.opened_at_ms
        margin = f.deadline_ms - f.submission_at_ms
        if f.submission_reason == "deadline":
            parts.append(
                f"the deadline fired after {seconds(took)}: the missing outputs were answered "
                "with explicit errors so the run would not stall"
            )
        else:
            parts.append(
                f"all outputs were in after {seconds(took)}, {seconds(margin)} before the deadline"
            )
        if f.submitted_at_ms is not None:
            attempts = f", {f.attempts} attempt(s)" if f.attempts else ""
            parts.append(
                f"submitted once ({f.outcome}{attempts}) "
                f"{seconds(f.submitted_at_ms - f.submission_at_ms)} later"
            )
        else:
            parts.append("the submission was requested but never confirmed")
    return "; ".join(parts) + "."

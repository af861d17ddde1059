"""Why each missing write is missing: one cause per expected action with no audit row, read
from the evidence the replay saved.

A missing write is an action a run's script asks for (a write tool its tenant may use) that the
gateway's audit log does not show for that run (writes.py counts them per run, tool and payload).
Sometimes that is the right answer: a write whose outcome is unknown and whose tool neither
honours keys nor has a lookup is never re-sent blindly; the model is told it may have happened.
The report must say which case each one is, and ``unexplained`` must stay 0.

With runcoord's evidence (the journal and the effect ledger), the calls of the run that ask for
the write (``StepOpened``, same tool, same payload hash) and that have no audit row are matched
to the missing writes, and each gets the first rule that holds:

- ``not_enabled``: the call's output came from policy (``source: policy``), or its error says
  ``not_enabled``: the tool is not enabled for the tenant; it was never sent;
- ``unknown_outcome_not_retried``: its ledger row is ``unknown``: an attempt was sent, whether it
  acted cannot be known, and it was not sent again (no key, no lookup); the model got an
  ``unknown_outcome`` error;
- ``step_deadline``: the step deadline passed before the tool answered: the ledger row is
  final with a ``timeout`` error output, or ``unknown`` with an output saying the tool did not
  answer before the step deadline (re-sent with its key, or reconciled, until then), or the
  call's output came from the deadline (``source: deadline``) while the ledger row is missing
  or still claimed;
- ``not_approved``: the call needed a person's approval and got none in time, or the approval
  rules changed under it (``source: approval``, ``approval_expired``): never sent, the model
  was told. (A scripted reject is not an expected write at all: writes.py);
- ``executor_gave_up``: the executor reported the call failed (an answer outside the tool's
  protocol, a bug) and the model got a ``tool_failed`` output (``source: executor``);
- ``tool_refused``: the ledger row is final with any other error output (the gateway answered an
  error: ``tool_error``, ``invalid_arguments``, ...): the model got the error;
- ``run_ended_before_execution``: no output and no final ledger row, and the journal shows the
  run finished (failed, cancelled, expired) before an executor carried the call out;
- ``run_unfinished_at_end``: no output and no final ledger row, and the run had not finished
  when the replay ended (its evidence was collected).

The writes left over (the journal has fewer calls asking for the write than the script) were
never asked for by the provider:

- ``run_not_accepted``: the journal has no ``RunAccepted``: the run never started;
- ``run_ended_before_dispatch``: the run finished other than ``completed`` before the provider
  asked for the call;
- ``provider_did_not_ask``: the run completed, and no step asked for the call;
- ``run_unfinished_at_end``: the run had not finished, and the call was not asked for yet.

Without a journal (the baseline keeps no ledger and no journal; an older replay), only the
provider's records speak: for the script step k holding the write, and A the submissions the
provider accepted for the run:

- ``run_ended_before_dispatch``: no provider run, or k > A, and the run (or the provider run)
  ended; ``run_unfinished_at_end``: the same, but it had not ended;
- ``step_never_answered``: k = A and the provider run waits in (or expired from)
  requires_action: the provider asked, the system never answered;
- ``run_ended_before_dispatch``: k = A and the provider run was cancelled or failed first;
- anything else (k < A: the step was answered, yet the tool never acted) is ``unexplained``:
  the baseline's own evidence does not say why.

Anything no rule explains is ``unexplained``, with what the evidence shows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from runcoord.domain import events as ev
from runcoord.domain.model import Output, ToolCall
from runcoord.harness.report.data import AuditRow, RunRecord
from runcoord.harness.report.writes import payload_hash
from runcoord.harness.workload.trace import TraceTurn

CAUSES: dict[str, str] = {
    "not_enabled": "the tool is not enabled for the tenant: refused, never sent",
    "unknown_outcome_not_retried": (
        "sent once, outcome unknown, not sent again (no key, no lookup); the model was told"
    ),
    "step_deadline": "the step deadline passed before the tool answered; the model was told",
    "tool_refused": "the gateway answered an error; the model got it",
    "executor_gave_up": "the executor could not carry the call out; the model was told why",
    "not_approved": "needed approval, not approved in time: never sent; the model was told",
    "run_ended_before_execution": "the run ended before an executor carried the call out",
    "run_ended_before_dispatch": "the run ended before the provider asked for the call",
    "step_never_answered": "the provider asked; the system never answered the step",
    "provider_did_not_ask": "the run completed without the provider asking for the call",
    "run_not_accepted": "the run never started (no RunAccepted in the journal)",
    "run_unfinished_at_end": "the run had not finished (or not got that far) when the replay ended",
    "unexplained": "no rule explains it",
}
UNEXPLAINED = "unexplained"
_PROVIDER_TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled", "expired"})


@dataclass(frozen=True)
class MissingWrite:
    run_id: str
    tool: str
    payload_hash: str
    cause: str
    why: str
    tool_call_id: str | None = None


@dataclass
class MissingFigures:
    evidence: str  # journal+ledger | journal | provider records
    writes: list[MissingWrite] = field(default_factory=list)
    note: str | None = None

    def by_cause(self) -> dict[str, int]:
        """Every cause that occurred, and always ``unexplained`` (0 if none)."""
        counts = Counter(w.cause for w in self.writes)
        out = {cause: counts[cause] for cause in CAUSES if counts[cause]}
        out[UNEXPLAINED] = counts[UNEXPLAINED]
        return out

    def detail(self) -> list[dict[str, Any]]:
        return [asdict(w) for w in self.writes]


def _payload_hash(arguments: str) -> str | None:
    try:
        return payload_hash(json.loads(arguments or "{}"))
    except ValueError:
        return None


def _error(text: Any) -> dict[str, Any]:
    """The ``error`` object of an error output (runcoord.domain.error_output), or {}."""
    try:
        body = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def error_type(text: Any) -> str | None:
    kind = _error(text).get("type")
    return str(kind) if kind else None


def error_message(text: Any) -> str:
    return str(_error(text).get("message") or "")


# ------------------------------------------------------------------ with a journal and a ledger


@dataclass
class _RunView:
    """What the journal says about one run, as far as the rules need."""

    accepted: ev.RunAccepted | None = None
    finished: ev.RunFinished | None = None
    calls: list[tuple[str, ToolCall]] = field(default_factory=list)  # (step id, call)
    outputs: dict[str, Output] = field(default_factory=dict)  # first output per tool call id

    @classmethod
    def of(cls, events: Sequence[ev.JournalEvent]) -> _RunView:
        view = cls()
        for e in events:
            if isinstance(e, ev.RunAccepted) and view.accepted is None:
                view.accepted = e
            elif isinstance(e, ev.RunFinished) and view.finished is None:
                view.finished = e
            elif isinstance(e, ev.StepOpened):
                view.calls.extend((e.step_id, c) for c in e.calls)
            elif isinstance(e, ev.ToolOutputRecorded):
                view.outputs.setdefault(e.output.tool_call_id, e.output)
        return view

    def ended(self) -> str:
        f = self.finished
        assert f is not None
        return f"{f.status}" + (f" ({f.reason})" if f.reason else "")


def _call_cause(
    view: _RunView, call: ToolCall, ledger: Mapping[str, Any] | None
) -> tuple[str, str]:
    """(cause, why) for one call the journal shows asked for and the audit log never saw."""
    output = view.outputs.get(call.id)
    kind = error_type(output.output) if output is not None and output.is_error else None
    if output is not None and (output.source == "policy" or kind == "not_enabled"):
        return "not_enabled", f"output from {output.source}: {kind}"
    if output is not None and output.source == "approval":
        return "not_approved", f"output from approval: {error_message(output.output)}"
    state = ledger.get("state") if ledger else None
    if ledger is not None and state != "claimed":
        result = ledger.get("result") if isinstance(ledger.get("result"), dict) else {}
        assert isinstance(result, dict)
        answer = error_type(result.get("output")) if result.get("is_error") else None
        sent = "sent" if ledger.get("sent_at") else "never sent"
        if state == "unknown" or answer == "unknown_outcome":
            if "before the step deadline" in error_message(result.get("output")):
                # Re-sent with its key, or reconciled by lookup, until the step deadline.
                return "step_deadline", f"ledger {state}: still unknown at the step deadline"
            return (
                "unknown_outcome_not_retried",
                f"ledger {state} after {ledger.get('attempts')} claim(s), {sent}; "
                f"the model got {answer or 'an error'}",
            )
        if answer == "timeout":
            return "step_deadline", f"ledger {state}: timeout ({sent})"
        if answer == "not_enabled":
            return "not_enabled", f"ledger {state}: not_enabled"
        if result.get("is_error"):
            text = str(result.get("output"))[:200]
            return "tool_refused", f"ledger {state}: {answer or 'error'}: {text}"
        return (
            UNEXPLAINED,
            f"ledger {state} with a result ({str(result.get('output'))[:120]}), "
            "but the audit log has no action for this call",
        )
    held = f"ledger claimed by {ledger.get('lease_owner')}" if ledger else "no ledger row"
    if output is not None:
        if output.source == "deadline":
            return "step_deadline", f"output from the step deadline; {held}"
        if output.source == "executor":
            return "executor_gave_up", f"the executor gave up on the call ({kind}); {held}"
        return UNEXPLAINED, f"output from {output.source} ({kind}) but {held}"
    if view.finished is not None:
        return "run_ended_before_execution", f"run {view.ended()}; {held}, no output"
    return "run_unfinished_at_end", f"run not finished at the end; {held}, no output"


def _never_asked(view: _RunView) -> tuple[str, str]:
    if view.accepted is None:
        return "run_not_accepted", "no RunAccepted in the journal"
    steps = len({step for step, _ in view.calls})
    if view.finished is None:
        return "run_unfinished_at_end", f"run not finished at the end, {steps} step(s) so far"
    if view.finished.status == "completed":
        return "provider_did_not_ask", f"run completed after {steps} step(s), none asked for it"
    return "run_ended_before_dispatch", f"run {view.ended()} after {steps} step(s)"


def _from_journal(
    run_id: str,
    key: tuple[str, str],
    count: int,
    want: int,
    view: _RunView,
    acted_calls: set[str],
    ledger: Mapping[tuple[str, str], Mapping[str, Any]],
) -> list[MissingWrite]:
    tool, phash = key
    asked = [c for _, c in view.calls if c.name == tool and _payload_hash(c.arguments) == phash]
    silent = [c for c in asked if c.id not in acted_calls]
    out: list[MissingWrite] = []
    for call in silent[:count]:
        cause, why = _call_cause(view, call, ledger.get((run_id, call.id)))
        out.append(MissingWrite(run_id, tool, phash, cause, why, call.id))
    never = max(0, want - len(asked))
    for _ in range(min(never, count - len(out))):
        cause, why = _never_asked(view)
        out.append(MissingWrite(run_id, tool, phash, cause, why))
    while len(out) < count:
        why = (
            f"{len(asked)} call(s) asked for it, {len(asked) - len(silent)} with an audit row, "
            f"{want} expected"
        )
        out.append(MissingWrite(run_id, tool, phash, UNEXPLAINED, why))
    return out


# ------------------------------------------------------------------ provider records only


def _provider_state(records: Mapping[str, Any], run_id: str) -> tuple[bool, int, str | None]:
    """(a provider run exists, submissions it accepted, the latest one's status)."""
    creates = [c for c in records.get("runs", []) if c.get("our_run_id") == run_id]
    if not creates:
        return False, 0, None
    ids = {c["id"] for c in creates}
    accepted = sum(
        1 for s in records.get("submissions", []) if s.get("run_id") in ids and s.get("accepted")
    )
    latest = max(creates, key=lambda c: float(c.get("created_at") or 0))
    status = latest.get("status")
    if latest.get("api") == "responses" and status == "completed" and latest.get("call_ids"):
        status = "requires_action"  # a response that ends with function calls asks for outputs
    return True, accepted, status


def _from_records(
    run: RunRecord,
    key: tuple[str, str],
    count: int,
    turn: TraceTurn,
    records: Mapping[str, Any],
) -> list[MissingWrite]:
    tool, phash = key
    steps = [
        k
        for k, step in enumerate(turn.script.steps)
        for call in step.tool_calls
        if call.name == tool and payload_hash(call.arguments) == phash
    ]
    exists, accepted, status = _provider_state(records, run.run_id)
    ended = run.status is not None or status in _PROVIDER_TERMINAL
    out: list[MissingWrite] = []
    # The last occurrences first: the furthest steps are the ones a run may not have reached.
    for k in reversed(steps[-count:] if count <= len(steps) else steps):
        if not exists or k > accepted:
            where = f"provider run {status}" if exists else "no provider run"
            why = f"{where}, {accepted} step(s) answered; the write is in step {k}"
            cause = "run_ended_before_dispatch" if ended else "run_unfinished_at_end"
        elif k == accepted and status in ("requires_action", "expired"):
            cause, why = "step_never_answered", f"provider run {status} at step {k}"
        elif k == accepted and status in _PROVIDER_TERMINAL - {"completed"}:
            cause, why = "run_ended_before_dispatch", f"provider run {status} at step {k}"
        elif k == accepted and status not in _PROVIDER_TERMINAL:
            cause, why = "run_unfinished_at_end", f"provider run {status} before step {k}"
        else:
            cause = UNEXPLAINED
            why = (
                f"step {k} was answered (provider run {status}, {accepted} accepted), the tool "
                "never acted; no ledger or journal says why"
            )
        out.append(MissingWrite(run.run_id, tool, phash, cause, why))
    while len(out) < count:
        out.append(MissingWrite(run.run_id, tool, phash, UNEXPLAINED, "not in the script"))
    return out


# ------------------------------------------------------------------ entry point


def attribute_missing(
    missing: Mapping[str, Counter[tuple[str, str]]],
    expected: Mapping[str, Counter[tuple[str, str]]],
    runs: Mapping[str, RunRecord],
    audit: Sequence[AuditRow],
    trace: Mapping[str, TraceTurn],
    *,
    journal: Mapping[str, Sequence[ev.JournalEvent]] | None,
    ledger: Sequence[Mapping[str, Any]] | None,
    sim_records: Mapping[str, Any],
) -> MissingFigures:
    """A cause for every missing write (``missing``: run id -> (tool, payload hash) -> how
    many), from the journal and ledger when there is a journal, else the provider's records."""
    if journal is not None:
        by_call = {
            (str(r.get("run_id")), str(r.get("tool_call_id"))): r
            for r in ledger or []
            if r.get("kind") == "tool_call"
        }
        acted: dict[str, set[str]] = {}
        for row in audit:
            if row.run_id is not None and row.tool_call_id is not None:
                acted.setdefault(row.run_id, set()).add(row.tool_call_id)
        figures = MissingFigures("journal+ledger" if ledger is not None else "journal")
        for run_id, keys in sorted(missing.items()):
            view = _RunView.of(journal.get(run_id, ()))
            for key, count in sorted(keys.items()):
                if count > 0:
                    figures.writes += _from_journal(
                        run_id,
                        key,
                        count,
                        expected.get(run_id, Counter())[key],
                        view,
                        acted.get(run_id, set()),
                        by_call,
                    )
        return figures
    figures = MissingFigures(
        "provider records",
        note=(
            "no journal or ledger: causes from the provider's records only; a step that was "
            "answered although its tool never acted is unexplained"
        ),
    )
    for run_id, keys in sorted(missing.items()):
        run = runs[run_id]
        for key, count in sorted(keys.items()):
            if count > 0:
                figures.writes += _from_records(run, key, count, trace[run.turn_id], sim_records)
    return figures

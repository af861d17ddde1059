"""One run's story: every record about it on one clock, with the gaps, and what it means.

Lines come from four sources: the journal (what the coordinator decided), the effect intents
(what it asked executors to do), the effect ledger (claims, fencing tokens, sends, outcomes)
and the gateway's audit log (what really happened outside). Clocks: journal and intents are
the coordinator's, the ledger PostgreSQL's, the audit log the gateway's; on one machine they
agree to the millisecond, across machines expect skew of that order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from runcoord.domain import events as ev
from runcoord.domain import intents as it
from runcoord.domain.ids import effect_key
from runcoord.domain.model import Output, ToolCall
from runcoord.forensics.explain import (
    CallFacts,
    CallStory,
    StepFacts,
    explain_call,
    explain_step,
    seconds,
)
from runcoord.forensics.facts import AuditEntry, LedgerEntry, RunFacts

# A pause at least this long between two consecutive lines is called out.
NOTABLE_GAP_MS = 1000


@dataclass(frozen=True, slots=True)
class Line:
    at_ms: int
    source: str  # journal | intent | ledger | gateway | dlq
    text: str
    ref: str = ""  # where the record is: p<partition>@<offset>, an effect key, an audit id
    since_start_ms: int = 0
    gap_ms: int = 0  # since the previous line


@dataclass(frozen=True)
class Story:
    run_id: str
    tenant: str
    thread_id: str
    phase: str
    headline: str
    findings: list[str]
    calls: list[CallStory]
    lines: list[Line]
    started_at_ms: int
    journal: dict[str, int] = field(default_factory=dict)  # partition, first/last offset


def _describe(e: ev.JournalEvent, calls: dict[str, str]) -> str:
    match e:
        case ev.RunAccepted():
            return (
                f"run accepted: tenant {e.tenant}, thread {e.thread_id}, provider {e.provider}; "
                f"must finish within {seconds(e.run_deadline_ms - e.at_ms)}"
            )
        case ev.ProviderRunCreated():
            how = " (reconciled: found by its metadata, not created twice)" if e.reconciled else ""
            return f"provider run {e.provider_run_id} created, status {e.status}{how}"
        case ev.RunStatusChanged():
            closed = f"; step {e.closed_step} closed" if e.closed_step else ""
            return f"provider status is now {e.status}{closed}"
        case ev.StepOpened():
            names = ", ".join(f"{c.name} ({c.id})" for c in e.calls)
            budget = seconds(e.deadline_ms - e.at_ms)
            return f"step {e.step_id} opened, needs: {names}; deadline {budget}"
        case ev.ToolOutputRecorded():
            o = e.output
            tool = calls.get(o.tool_call_id, "?")
            kind = "an error" if o.is_error else "a result"
            return f"{kind} for {tool} ({o.tool_call_id}) recorded, from {o.source}"
        case ev.SubmissionRequested():
            return f"step {e.step_id}: outputs submitted to the provider (reason: {e.reason})"
        case ev.StepSubmitted():
            moved = f", continues in {e.new_provider_run_id}" if e.new_provider_run_id else ""
            return (
                f"step {e.step_id}: submission confirmed, {e.outcome} after {e.attempts} "
                f"attempt(s){moved}"
            )
        case ev.WatchRenewed():
            return f"watching the provider again ({e.reason})"
        case ev.CancelRequested():
            return f"cancel requested: {e.reason}"
        case ev.RunFinished():
            reason = f" ({e.reason})" if e.reason else ""
            return f"run finished: {e.status}{reason}"
        case ev.InputIgnored():
            return f"input ignored: {e.input_kind} {e.ref}: {e.reason}"
        case ev.ApprovalRequested():
            a = e.approval
            return (
                f"approval {a.approval_id} requested for {a.tool} ({a.tool_call_id}): not "
                f"dispatched until decided; decision due within {seconds(a.deadline_ms - e.at_ms)}"
                f" (rules {a.policy_version})"
            )
        case ev.ApprovalDecided():
            after = {
                "approve": "the call is dispatched",
                "reject": "the model is told it was rejected",
                "expired": "the model is told it was not approved",
            }.get(e.decision, "")
            return f"approval {e.approval_id}: {e.decision} by {e.approver} ({e.reason}); {after}"
        case ev.ApprovalDecisionParked():
            d = e.decision
            return (
                f"decision {d.decision} by {d.approver} for approval {d.approval_id} kept: "
                "its request is not journaled yet"
            )
    return type(e).__name__


def _intent_what(i: it.EffectIntent | None, kind: str) -> str:
    match i:
        case it.ToolCallIntent():
            return f"call {i.tool} ({i.tool_call_id})"
        case it.SubmitOutputsIntent():
            return f"submit {len(i.outputs)} output(s) of step {i.step_id}"
        case it.CreateRunIntent():
            return "create the provider run"
        case it.ObserveRunIntent():
            return f"watch the provider run (watch {i.watch})"
        case it.EndWatchIntent():
            return f"stop watching the provider run (watch {i.watch}): the run finished"
        case it.CancelRunIntent():
            return f"cancel the provider run ({i.reason})"
    return f"{kind} (record no longer in Kafka)"


def _ledger_lines(led: LedgerEntry, what: str) -> list[Line]:
    key = led.effect_key
    owner = led.lease_owner or "?"
    lines = [
        Line(
            led.claimed_at_ms,
            "ledger",
            f"{what}: claimed by {owner}, fencing token {led.fencing_token}, claim #{led.attempts}",
            key,
        )
    ]
    if led.sent_at_ms is not None:
        lines.append(Line(led.sent_at_ms, "ledger", f"{what}: last send to the outside", key))
    if led.completed_at_ms is not None:
        err = f" ({led.error})" if led.error else ""
        lines.append(Line(led.completed_at_ms, "ledger", f"{what}: {led.state}{err}", key))
    return lines


def _audit_line(a: AuditEntry) -> Line:
    token = f", fencing token {a.fencing_token}" if a.fencing_token is not None else ""
    return Line(
        a.acted_at_ms,
        "gateway",
        f"gateway ACTED: {a.tool} ({a.tool_call_id}){token}",
        f"audit #{a.audit_id}",
    )


def _steps(facts: RunFacts) -> list[StepFacts]:
    opened: dict[str, ev.StepOpened] = {}
    requested: dict[str, ev.SubmissionRequested] = {}
    submitted: dict[str, ev.StepSubmitted] = {}
    closed: set[str] = set()
    for entry in facts.events:
        e = entry.event
        if isinstance(e, ev.StepOpened):
            opened.setdefault(e.step_id, e)
        elif isinstance(e, ev.SubmissionRequested):
            requested.setdefault(e.step_id, e)
        elif isinstance(e, ev.StepSubmitted):
            submitted.setdefault(e.step_id, e)
        elif isinstance(e, ev.RunStatusChanged) and e.closed_step:
            closed.add(e.closed_step)
    out = []
    for step_id, o in opened.items():
        r, s = requested.get(step_id), submitted.get(step_id)
        out.append(
            StepFacts(
                step_id,
                o.at_ms,
                o.deadline_ms,
                len(o.calls),
                r.at_ms if r else None,
                r.reason if r else None,
                s.at_ms if s else None,
                s.outcome if s else None,
                s.attempts if s else None,
                step_id in closed and r is None,
            )
        )
    return out


def _calls(facts: RunFacts) -> list[CallFacts]:
    run = facts.run
    ledger = {led.effect_key: led for led in facts.ledger}
    intents = {i.effect_key: i for i in facts.intents if i.kind == "tool_call"}
    actions: dict[str, list[AuditEntry]] = defaultdict(list)
    for a in facts.audit:
        actions[a.tool_call_id or ""].append(a)
    outputs: dict[str, tuple[Output, int]] = {}
    for entry in facts.events:
        e = entry.event
        if isinstance(e, ev.ToolOutputRecorded):
            outputs.setdefault(e.output.tool_call_id, (e.output, e.at_ms))
    out: list[CallFacts] = []
    for entry in facts.events:
        e = entry.event
        if not isinstance(e, ev.StepOpened):
            continue
        for call in e.calls:
            key = effect_key(
                tenant=run.tenant,
                thread_id=run.thread_id,
                run_id=run.run_id,
                step=e.step_id,
                tool_call_id=call.id,
                kind="tool_call",
            )
            intent = intents.get(key)
            output = outputs.get(call.id)
            out.append(
                CallFacts(
                    call=call,
                    step_id=e.step_id,
                    effect_key=key,
                    dispatched_at_ms=intent.at_ms if intent else _dispatched(facts, key, e.at_ms),
                    tool=facts.tools.get(call.name),
                    ledger=ledger.get(key),
                    actions=sorted(actions.get(call.id, []), key=lambda a: a.acted_at_ms),
                    output=output[0] if output else None,
                    output_at_ms=output[1] if output else None,
                )
            )
    return out


def _dispatched(facts: RunFacts, key: str, opened_at: int) -> int | None:
    # The intent record may be past retention: a claimed ledger row proves it went out.
    return opened_at if any(led.effect_key == key for led in facts.ledger) else None


def build_story(facts: RunFacts) -> Story:
    run = facts.run
    calls_by_id: dict[str, ToolCall] = {}
    for entry in facts.events:
        if isinstance(entry.event, ev.StepOpened):
            for c in entry.event.calls:
                calls_by_id[c.id] = c
    names = {cid: c.name for cid, c in calls_by_id.items()}
    start = run.accepted_at_ms
    lines: list[Line] = []
    for entry in facts.events:
        e = entry.event
        ref = f"p{entry.partition}@{entry.offset} #{e.seq}"
        lines.append(Line(e.at_ms, "journal", _describe(e, names), ref))
    for i in facts.intents:
        lines.append(
            Line(i.at_ms, "intent", "intent: " + _intent_what(i.intent, i.kind), i.effect_key)
        )
    ledger_what = {i.effect_key: _intent_what(i.intent, i.kind) for i in facts.intents}
    for led in facts.ledger:
        what = ledger_what.get(led.effect_key) or led.kind
        lines.extend(_ledger_lines(led, what))
    lines.extend(_audit_line(a) for a in facts.audit)
    for d in facts.letters:
        lines.append(Line(d.at_ms, "dlq", f"dead letter ({d.kind}): {d.reason}", d.source_topic))
    lines = _clock(lines, start)

    call_stories = [explain_call(c) for c in _calls(facts)]
    findings = [explain_step(s) for s in _steps(facts)]
    findings.extend(f"{c.tool} ({c.tool_call_id}): {c.explanation}" for c in call_stories)
    findings.extend(_other_findings(facts))
    return Story(
        run_id=run.run_id,
        tenant=run.tenant,
        thread_id=run.thread_id,
        phase=run.phase,
        headline=_headline(facts, call_stories),
        findings=findings,
        calls=call_stories,
        lines=lines,
        started_at_ms=start,
        journal={
            "partition": run.partition,
            "first_offset": run.first_offset,
            "last_offset": run.last_offset,
            "events": len(facts.events),
        },
    )


def _clock(lines: list[Line], start: int) -> list[Line]:
    order = {"journal": 0, "intent": 1, "ledger": 2, "gateway": 3, "dlq": 4}
    lines.sort(key=lambda ln: (ln.at_ms, order.get(ln.source, 9)))
    out: list[Line] = []
    previous = start
    for ln in lines:
        out.append(
            Line(ln.at_ms, ln.source, ln.text, ln.ref, ln.at_ms - start, ln.at_ms - previous)
        )
        previous = ln.at_ms
    return out


def _headline(facts: RunFacts, calls: list[CallStory]) -> str:
    run = facts.run
    end = run.finished_at_ms or run.updated_at_ms
    took = seconds(end - run.accepted_at_ms)
    state = f"{run.phase} after {took}" if run.terminal else f"still {run.phase} after {took}"
    writes = [c for c in calls if c.tool in _write_tools(facts)]
    dup = sum(1 for c in calls if c.duplicate)
    unknown = sum(1 for c in calls if c.outcome == "unknown")
    retried = sum(1 for c in calls if c.retried)
    parts = [
        f"Run {run.run_id} (tenant {run.tenant}) {state}",
        f"{run.steps} step(s), {len(calls)} tool call(s), {len(writes)} write(s)",
    ]
    if dup:
        parts.append(f"{dup} DUPLICATED side effect(s)")
    else:
        parts.append("no side effect happened twice")
    if retried:
        parts.append(f"{retried} call(s) timed out and were retried safely")
    if unknown:
        parts.append(f"{unknown} outcome(s) unknown, told to the model")
    return "; ".join(parts) + "."


def _write_tools(facts: RunFacts) -> set[str]:
    return {n for n, t in facts.tools.items() if t.write}


def _other_findings(facts: RunFacts) -> list[str]:
    out: list[str] = []
    if facts.resubmission_of:
        out.append(
            f"client resubmission: the same input on the same thread was already run as "
            f"{facts.resubmission_of}; the client sent the turn again instead of retrying with "
            "its idempotency key."
        )
    for entry in facts.events:
        e = entry.event
        if isinstance(e, ev.InputIgnored) and e.input_kind == "StartRun":
            out.append("the turn was delivered twice; the second copy was ignored (one run).")
        elif isinstance(e, ev.ProviderRunCreated) and e.reconciled:
            out.append(
                "creating the provider run had an unknown outcome; it was found by its metadata "
                "instead of being created again (one provider run)."
            )
        elif isinstance(e, ev.CancelRequested):
            out.append(f"the run was cancelled on purpose: {e.reason}.")
    for d in facts.letters:
        out.append(f"dead letter ({d.kind}) from {d.source_topic}: {d.reason}.")
    if facts.missing_seqs:
        out.append(f"journal events {facts.missing_seqs} could not be read back from Kafka.")
    return out

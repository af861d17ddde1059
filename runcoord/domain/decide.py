"""Given a run's state and one input: the events to append and the effect intents to emit.

Pure: no clock (``now_ms`` is passed in), no I/O. Every change goes through an event folded
with :func:`evolve`, so the state after a decision is always the fold of its journal.
Inputs that cannot be tied to a run (or to this tenant's run), or that make no sense for it
(an observation before the provider run exists, a status nobody knows), are dead-lettered
with a reason; inputs of a run that arrive twice, late or out of order are journaled as
ignored. No input, however wrong, makes :func:`decide` raise: an exception would stop the
coordinator's partition on that record. The asserts left here guard invariants of the
state itself, which no input can break (each one says why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.evolve import STATUS_TRIGGER, TERMINAL_STATUSES, evolve
from runcoord.domain.ids import approval_id, effect_key, payload_hash
from runcoord.domain.model import Approval, Output, ParkedDecision, RunState, Step, ToolCall
from runcoord.domain.phases import Phase
from runcoord.domain.policy import Policy


@dataclass(frozen=True, slots=True)
class Decision:
    state: RunState | None
    events: tuple[ev.JournalEvent, ...] = ()
    intents: tuple[it.EffectIntent, ...] = ()
    dead_letter: str | None = None  # the reason, when the input goes to runs.dlq


# Every status an observation may report: the vendor-neutral statuses and an open step.
OBSERVABLE_STATUSES = frozenset({*STATUS_TRIGGER, "requires_action"})
DECISIONS = frozenset({"approve", "reject"})
# Decisions kept for requests not journaled yet, per run; more are dead-lettered.
MAX_PARKED = 16


def error_output(kind: str, message: str) -> str:
    """The explicit error a model sees instead of a result. Stable shape: models read it."""
    return json.dumps({"error": {"type": kind, "message": message}}, sort_keys=True)


@dataclass(slots=True)
class _Decider:
    state: RunState | None
    now: int
    policy: Policy
    events: list[ev.JournalEvent] = field(default_factory=list)
    intents: list[it.EffectIntent] = field(default_factory=list)
    dead_letter: str | None = None

    # -- plumbing -------------------------------------------------------------------------

    @property
    def run(self) -> RunState:
        # Only read once the run exists: decide() answers an input for no run before any
        # handler runs, and start() reads self.state itself.
        assert self.state is not None
        return self.state

    def emit(self, event_type: type[ev.Event], run_id: str, **fields: object) -> ev.Event:
        seq = (self.state.seq if self.state else 0) + 1
        event = event_type(run_id=run_id, seq=seq, at_ms=self.now, **fields)
        self.state = evolve(self.state, event)  # type: ignore[arg-type]
        self.events.append(event)  # type: ignore[arg-type]
        return event

    def common(self) -> dict[str, str]:
        """The fields every intent of this run carries."""
        r = self.run
        return {
            "run_id": r.run_id,
            "tenant": r.tenant,
            "thread_id": r.provider_thread,
            "provider": r.provider,
        }

    def key(self, *, step: str = "", tool_call_id: str = "", kind: str) -> str:
        r = self.run
        return effect_key(
            tenant=r.tenant,
            thread_id=r.thread_id,
            run_id=r.run_id,
            step=step,
            tool_call_id=tool_call_id,
            kind=kind,
        )

    def ignore(self, kind: str, ref: str, reason: str, *, dead_letter: bool = False) -> None:
        self.emit(ev.InputIgnored, self.run.run_id, input_kind=kind, ref=ref, reason=reason)
        if dead_letter:
            self.dead_letter = reason

    def reject(self, reason: str) -> None:
        self.dead_letter = reason

    def decision(self) -> Decision:
        return Decision(self.state, tuple(self.events), tuple(self.intents), self.dead_letter)

    # -- effects --------------------------------------------------------------------------

    def watch(self) -> None:
        r = self.run
        # Every caller watches a provider run that exists: created() after recording it,
        # observed() only for a run that has one (checked first), request_cancel() and
        # tick() only when provider_run_id is set, submission() after the follow-up run
        # replaced it. ProviderRunCreated sets the status along with the id.
        assert r.provider_run_id is not None and r.provider_status is not None
        open_step = r.open_step
        self.intents.append(
            it.ObserveRunIntent(
                effect_key=self.key(step=f"watch:{r.watch}", kind="observe_run"),
                **self.common(),
                watch=r.watch,
                provider_run_id=r.provider_run_id,
                since_status=r.provider_status,
                since_step=open_step.step_id if open_step else None,
                timeout_ms=self.policy.watch_timeout_ms,
            )
        )

    def cancel_intent(self, provider_run_id: str, reason: str) -> None:
        self.intents.append(
            it.CancelRunIntent(
                effect_key=self.key(kind="cancel_run"),
                **self.common(),
                provider_run_id=provider_run_id,
                reason=reason,
            )
        )

    def request_cancel(self, reason: str) -> None:
        r = self.run
        give_up = self.now + self.policy.cancel_grace_ms
        submitting = r.step is not None and r.step.submission_out
        self.emit(ev.CancelRequested, r.run_id, reason=reason, give_up_at_ms=give_up)
        if self.run.provider_run_id is not None:
            if not submitting:
                self.cancel_intent(self.run.provider_run_id, reason)
            self.watch()
        # Without a provider run yet, the cancel goes out when its creation is observed; with
        # a submission out, when the submission's outcome is known (see submission): a
        # cancel then would answer the step's calls beside the submission (Responses closes
        # them with an error output), and it would stop the step's response, not the
        # follow-up the submission is making. So nothing but the submission ever answers a
        # step while it is out, and its executor need not look before a first send.

    def record_output(
        self,
        step: Step,
        call_id: str,
        text: str,
        *,
        error: bool,
        source: str,
        key: str | None = None,
    ) -> None:
        output = Output(call_id, text, error, source, payload_hash(text))
        self.emit(
            ev.ToolOutputRecorded,
            self.run.run_id,
            step_id=step.step_id,
            output=output,
            effect_key=key,
        )

    def submit_if_complete(self, reason: str) -> None:
        r = self.run
        step = r.open_step
        if step is None or step.missing or step.submission_key is not None:
            return
        key = self.key(step=step.step_id, kind="submit_outputs")
        self.emit(
            ev.SubmissionRequested, r.run_id, step_id=step.step_id, effect_key=key, reason=reason
        )
        r = self.run
        # A step is opened only by an observation of an existing provider run, and the step
        # was just checked to be open.
        assert r.provider_run_id is not None and r.step is not None
        self.intents.append(
            it.SubmitOutputsIntent(
                effect_key=key,
                **self.common(),
                provider_run_id=r.provider_run_id,
                step_id=step.step_id,
                outputs=r.step.outputs,
                # The executor may keep trying until the provider would expire the run.
                deadline_ms=r.expires_at_ms or r.run_deadline_ms,
                assistant_id=r.assistant_id,
                metadata=dict(r.metadata),
            )
        )

    def open_step(self, obs: inp.RunObserved) -> None:
        r = self.run
        assert obs.step_id is not None  # observed() opens a step only when it names one
        ids = [c.id for c in obs.tool_calls]
        if len(set(ids)) != len(ids):
            self.request_cancel(f"step {obs.step_id} has ambiguous (repeated) tool_call_ids")
            return
        deadline = self.now + self.policy.step_budget_ms
        if obs.expires_at_ms is not None:
            deadline = min(deadline, obs.expires_at_ms - self.policy.safety_margin_ms)
        self.emit(
            ev.StepOpened,
            r.run_id,
            step_id=obs.step_id,
            calls=obs.tool_calls,
            deadline_ms=deadline,
            expires_at_ms=obs.expires_at_ms,
        )
        self.watch()
        step = self.run.step
        assert step is not None  # StepOpened, just folded in, set it
        for call in obs.tool_calls:
            refusal = self.policy.refusal(r.tenant, call.name)
            if refusal is not None:
                kind = "unknown_tool" if refusal.startswith("unknown") else "not_enabled"
                self.record_output(
                    step, call.id, error_output(kind, refusal), error=True, source="policy"
                )
                continue
            if self.policy.needs_approval(r.tenant, call.name, call.arguments):
                self.request_approval(call)
                continue
            self.intents.append(self.tool_intent(step, call))
        self.submit_if_complete("complete")

    # -- approvals ------------------------------------------------------------------------

    def request_approval(self, call: ToolCall) -> None:
        """Hold ``call`` for a person's decision; a decision that came first is applied now."""
        r, p = self.run, self.policy
        step = r.step
        assert step is not None  # only called by open_step, right after StepOpened
        deadline = self.now + p.approval_budget_ms
        step_deadline = max(step.deadline_ms, deadline + p.step_budget_ms)
        if r.expires_at_ms is not None:
            # The provider's expiry bounds it all: the decision, then the tool, then the
            # submission, each before the run expires.
            last = max(step.deadline_ms, r.expires_at_ms - p.safety_margin_ms)
            step_deadline = min(step_deadline, last)
            deadline = min(deadline, step_deadline - p.step_budget_ms)
        deadline = max(deadline, self.now)
        approval = Approval(
            approval_id=approval_id(run_id=r.run_id, step_id=step.step_id, tool_call_id=call.id),
            tool_call_id=call.id,
            tool=call.name,
            arguments_hash=payload_hash(call.arguments),
            policy_version=p.approval_version,
            deadline_ms=deadline,
            requested_at_ms=self.now,
        )
        self.emit(
            ev.ApprovalRequested,
            r.run_id,
            step_id=step.step_id,
            approval=approval,
            step_deadline_ms=step_deadline,
            run_deadline_ms=max(r.run_deadline_ms, step_deadline + p.step_budget_ms),
        )
        parked = next((d for d in r.parked if d.approval_id == approval.approval_id), None)
        if parked is not None:
            # The input being decided is the observation: the decision's refusal, if any, is
            # journaled, but it is not the observation that goes to the dead letters.
            self.apply_decision(approval, parked, dead_letter=False)

    def approval_decision(self, d: inp.ApprovalDecision) -> None:
        r = self.run
        if r.tenant != d.tenant:
            self.reject(f"approval decision for run {r.run_id} from another tenant")
            return
        if d.decision not in DECISIONS:
            self.reject(f"approval decision {d.decision!r}: approve or reject")
            return
        if r.terminal:
            self.ignore("ApprovalDecision", d.approval_id, f"run already {r.phase.value}")
            return
        approval = r.step.approval(d.approval_id) if r.step else None
        parked = ParkedDecision(
            d.approval_id,
            d.decision,
            d.reason,
            d.approver,
            d.arguments_hash,
            d.policy_version,
            d.decided_at_ms,
        )
        if approval is not None:
            self.apply_decision(approval, parked)
        elif any(p.approval_id == d.approval_id for p in r.parked):
            self.ignore("ApprovalDecision", d.approval_id, "a decision is already kept for it")
        elif len(r.parked) >= MAX_PARKED:
            reason = f"no such approval request, and {MAX_PARKED} decisions already wait for theirs"
            self.ignore("ApprovalDecision", d.approval_id, reason, dead_letter=True)
        else:
            # Its request is not journaled yet (the decision overtook it): keep it.
            self.emit(ev.ApprovalDecisionParked, r.run_id, decision=parked)

    def apply_decision(
        self, approval: Approval, d: ParkedDecision, *, dead_letter: bool = True
    ) -> None:
        """The first decision wins; a repeat of it is a no-op; any other is refused with the
        recorded one; one made on other arguments or rules is refused (fail closed)."""
        r = self.run
        ref = approval.approval_id
        if not approval.pending:
            recorded = f"{approval.decision} by {approval.approver}"
            if (approval.decision, approval.approver, approval.reason) == (
                d.decision,
                d.approver,
                d.reason,
            ):
                self.ignore("ApprovalDecision", ref, f"duplicate: already {recorded}")
            else:
                self.ignore("ApprovalDecision", ref, f"conflicting: already {recorded}")
            return
        if d.arguments_hash != approval.arguments_hash:
            reason = "refused: the decision was made on other arguments than the call's"
            self.ignore("ApprovalDecision", ref, reason, dead_letter=dead_letter)
            return
        if d.policy_version != approval.policy_version:
            reason = "refused: the decision was made under other approval rules"
            self.ignore("ApprovalDecision", ref, reason, dead_letter=dead_letter)
            return
        step = r.open_step
        if step is None or step.submission_key is not None or r.phase is Phase.CANCELLING:
            self.ignore("ApprovalDecision", ref, "the step is no longer waiting for it")
            return
        if self.policy.approval_version != approval.policy_version:
            # Whoever decided, the rules the request was made under are gone: fail closed now
            # rather than leave the call waiting for a decision that can never count.
            self.settle(approval, "expired", "the approval rules changed since the request")
        elif self.now >= approval.deadline_ms:
            self.settle(approval, "expired", "not approved in time")
        else:
            self.settle(approval, d.decision, d.reason, d.approver, d.decided_at_ms)

    def settle(
        self,
        approval: Approval,
        decision: str,
        reason: str,
        approver: str = "runcoord",
        decided_at_ms: int | None = None,
    ) -> None:
        """Record the approval's final decision, and act on it: dispatch the call, or answer
        the model with why it was not."""
        r = self.run
        step = r.step
        assert step is not None  # callers found the approval in the open step
        self.emit(
            ev.ApprovalDecided,
            r.run_id,
            step_id=step.step_id,
            approval_id=approval.approval_id,
            decision=decision,
            reason=reason,
            approver=approver,
            decided_at_ms=self.now if decided_at_ms is None else decided_at_ms,
        )
        step = self.run.step
        assert step is not None
        call = next(c for c in step.calls if c.id == approval.tool_call_id)
        if decision == "approve":
            self.intents.append(self.tool_intent(step, call))
            return
        if decision == "reject":
            text = error_output("approval_rejected", f"rejected by {approver}: {reason}")
        else:
            text = error_output("approval_expired", reason)
        self.record_output(step, call.id, text, error=True, source="approval")
        self.submit_if_complete("complete")

    def tool_intent(self, step: Step, call: ToolCall) -> it.ToolCallIntent:
        return it.ToolCallIntent(
            effect_key=self.key(step=step.step_id, tool_call_id=call.id, kind="tool_call"),
            **self.common(),
            step_id=step.step_id,
            tool_call_id=call.id,
            tool=call.name,
            arguments=call.arguments,
            deadline_ms=step.deadline_ms,
        )

    def fill_missing(self, step: Step) -> None:
        for call in step.missing:
            approval = step.approval_of(call.id)
            if approval is not None and approval.pending:
                self.settle(approval, "expired", "not approved in time")
                continue
            rule = self.policy.tools.get(call.name)
            maybe = (
                " The action may have been performed; it was not retried."
                if (rule is None or rule.write)
                else ""
            )
            message = f"No result for {call.name} before the step deadline.{maybe}"
            self.record_output(
                step, call.id, error_output("timeout", message), error=True, source="deadline"
            )

    # -- inputs ---------------------------------------------------------------------------

    def start(self, cmd: inp.StartRun) -> None:
        if self.state is not None:
            if self.state.tenant != cmd.tenant:
                self.reject(f"run_id {cmd.run_id} belongs to another tenant")
            else:
                self.ignore("StartRun", cmd.run_id, "duplicate StartRun: the run exists")
            return
        create_key = effect_key(
            tenant=cmd.tenant,
            thread_id=cmd.thread_id,
            run_id=cmd.run_id,
            step="",
            tool_call_id="",
            kind="create_run",
        )
        self.emit(
            ev.RunAccepted,
            cmd.run_id,
            tenant=cmd.tenant,
            thread_id=cmd.thread_id,
            assistant_id=cmd.assistant_id,
            provider=cmd.provider,
            input=cmd.input,
            run_deadline_ms=self.now + self.policy.run_budget_ms,
            create_key=create_key,
            metadata=dict(cmd.metadata),
        )
        self.intents.append(
            it.CreateRunIntent(
                effect_key=create_key,
                run_id=cmd.run_id,
                tenant=cmd.tenant,
                thread_id=cmd.thread_id,
                provider=cmd.provider,
                assistant_id=cmd.assistant_id,
                input=cmd.input,
                metadata=dict(cmd.metadata),
                conversation=cmd.conversation,
            )
        )

    def cancel(self, cmd: inp.CancelRun) -> None:
        r = self.run
        if r.tenant != cmd.tenant:
            self.reject(f"run {r.run_id} belongs to another tenant")
        elif r.terminal:
            self.ignore("CancelRun", r.run_id, f"run already {r.phase.value}")
        elif r.phase is Phase.CANCELLING:
            self.ignore("CancelRun", r.run_id, "cancel already requested")
        else:
            self.request_cancel(cmd.reason)

    def created(self, obs: inp.RunCreated) -> None:
        r = self.run
        if obs.effect_key != r.create_key:
            self.ignore("RunCreated", obs.effect_key, "not this run's create effect")
            return
        if r.provider_run_id is not None:
            self.ignore("RunCreated", obs.effect_key, "duplicate: provider run already known")
            return
        # Recorded even when we gave up before the provider answered: a second delivery is
        # then a plain duplicate.
        gave_up = r.terminal
        self.emit(
            ev.ProviderRunCreated,
            r.run_id,
            provider_run_id=obs.provider_run_id,
            status=obs.status,
            expires_at_ms=obs.expires_at_ms,
            reconciled=obs.reconciled,
            provider_thread_id=obs.provider_thread_id,
        )
        if gave_up:
            # Don't leave the provider's run to idle until it expires.
            self.cancel_intent(obs.provider_run_id, "orphan: the run had already finished")
        elif obs.status in TERMINAL_STATUSES:
            self.emit(ev.RunFinished, r.run_id, status=obs.status, reason="terminal when created")
        else:
            if self.run.cancel_reason is not None:
                self.cancel_intent(obs.provider_run_id, self.run.cancel_reason)
            if obs.seen is None or not self.sighted(obs.seen):
                self.watch()

    def observed(self, obs: inp.RunObserved) -> None:
        r = self.run
        if r.provider_run_id is None:
            # Watches start only once the provider run exists: no watch can have seen this.
            self.reject(f"RunObserved for run {r.run_id}, which has no provider run yet")
            return
        if obs.status not in OBSERVABLE_STATUSES:
            self.reject(f"RunObserved with an unknown provider status {obs.status!r}")
            return
        if r.terminal:
            self.ignore("RunObserved", f"watch:{obs.watch}", f"run already {r.phase.value}")
            return
        if obs.watch != r.watch:
            self.ignore("RunObserved", f"watch:{obs.watch}", f"stale watch (current {r.watch})")
            return
        if obs.status in TERMINAL_STATUSES:
            self.emit(ev.RunFinished, r.run_id, status=obs.status, reason=obs.detail)
            return
        open_step = r.open_step
        if obs.status == "requires_action" and r.phase is not Phase.CANCELLING:
            if obs.step_id is None:
                self.renew("requires_action without a step id")
            elif open_step is not None and obs.step_id == open_step.step_id:
                self.renew("no change")
            elif obs.step_id in r.closed_steps:
                self.renew(f"step {obs.step_id} already closed")
            else:
                self.open_step(obs)
            return
        closes = open_step.step_id if open_step is not None else None
        if obs.status == r.provider_status and closes is None:
            self.renew("no change")
            return
        self.emit(
            ev.RunStatusChanged,
            r.run_id,
            status=obs.status,
            closed_step=closes,
            expires_at_ms=obs.expires_at_ms,
        )
        self.watch()

    def sighted(self, seen: inp.Sighting) -> bool:
        """Take a state a write saw on its own answer (RunCreated.seen, SubmissionResult.seen)
        as the current watch's observation, and say whether it was taken. The watch would
        have reported it, later; the watch then in flight reports a change the sighting
        already made, and is stale. Only news is taken: a working state, a step the run
        already has open or closed, or a run already finished is what a late delivery shows,
        and changes nothing."""
        r = self.run
        if r.terminal or r.provider_run_id is None or seen.status in ("queued", "in_progress"):
            return False
        if seen.status == "requires_action":
            open_step = r.open_step
            if seen.step_id is None or seen.step_id in r.closed_steps:
                return False
            if open_step is not None and open_step.step_id == seen.step_id:
                return False
        elif seen.status == r.provider_status:
            return False
        self.observed(
            inp.RunObserved(
                r.run_id,
                r.watch,
                seen.status,
                seen.step_id,
                seen.tool_calls,
                seen.expires_at_ms,
                seen.detail,
                changed=True,
            )
        )
        return True

    def works_on(self) -> bool:
        """The provider took the step's outputs, so the run left the step and works on
        (Assistants: the run is queued again; Responses: the follow-up response is, and is
        the run from now on). Said now, not when the watch of the waiting step next polls:
        that watch is stale from here, and the next is a watch of a working run. A run
        being cancelled keeps to its cancel. Returns whether it said so."""
        r = self.run
        step = r.open_step
        if (
            r.terminal
            or r.phase is Phase.CANCELLING
            or step is None
            or r.provider_status != "requires_action"
        ):
            return False
        self.emit(
            ev.RunStatusChanged,
            r.run_id,
            status="queued",
            closed_step=step.step_id,
            expires_at_ms=None,
        )
        self.watch()
        return True

    def renew(self, reason: str) -> None:
        self.emit(ev.WatchRenewed, self.run.run_id, reason=reason)
        self.watch()

    def tool_result(self, res: inp.ToolResult) -> None:
        r = self.run
        ref = f"{res.step_id}/{res.tool_call_id}"
        step = r.step
        if r.tenant != res.tenant:
            self.reject(f"tool result for run {r.run_id} from another tenant")
        elif step is None or (res.step_id != step.step_id and res.step_id not in r.closed_steps):
            self.reject(f"unknown step {res.step_id} for run {r.run_id}")
        elif r.terminal:
            self.ignore("ToolResult", ref, f"run already {r.phase.value}", dead_letter=True)
        elif res.step_id != step.step_id or res.step_id in r.closed_steps:
            self.ignore("ToolResult", ref, "step already closed", dead_letter=True)
        elif res.tool_call_id not in step.call_ids:
            self.reject(f"unknown tool_call_id {res.tool_call_id} for step {res.step_id}")
        elif (prior := step.output_for(res.tool_call_id)) is not None:
            if prior.payload_hash == payload_hash(res.output):
                self.ignore("ToolResult", ref, "duplicate result")
            elif prior.source == "deadline":
                reason = "late result: the step deadline passed and an error output was sent"
                self.ignore("ToolResult", ref, reason, dead_letter=True)
            else:
                reason = f"conflicting duplicate: the step already has a {prior.source} output"
                self.ignore("ToolResult", ref, reason, dead_letter=True)
        elif (held := step.approval_of(res.tool_call_id)) is not None and (
            held.decision != "approve"
        ):
            reason = "result for a call that was never approved: it was not dispatched"
            self.ignore("ToolResult", ref, reason, dead_letter=True)
        elif step.submission_key is not None:
            self.ignore("ToolResult", ref, "step already submitted", dead_letter=True)
        elif r.phase is Phase.CANCELLING:
            self.ignore("ToolResult", ref, "run is being cancelled", dead_letter=True)
        elif (too_large := self.oversize(step, res.output)) is not None:
            # The model is told instead of the step waiting for its deadline; the original
            # goes to the dead letters.
            self.record_output(
                step,
                res.tool_call_id,
                error_output("output_too_large", too_large),
                error=True,
                source="intake",
                key=res.effect_key,
            )
            self.reject(too_large)
            self.submit_if_complete("complete")
        else:
            self.record_output(
                step,
                res.tool_call_id,
                res.output,
                error=res.is_error,
                source=res.source,
                key=res.effect_key,
            )
            self.submit_if_complete("complete")

    def oversize(self, step: Step, output: str) -> str | None:
        """Why this output cannot be submitted with its step, or None when it can."""
        size = len(output.encode())
        if size > self.policy.max_output_bytes:
            return f"tool output is {size} bytes; the limit is {self.policy.max_output_bytes}"
        total = size + sum(len(o.output.encode()) for o in step.outputs)
        if total > self.policy.max_step_output_bytes:
            return (
                f"tool output is {size} bytes; with the step's other outputs that makes {total},"
                f" and one submission carries at most {self.policy.max_step_output_bytes}"
            )
        return None

    def submission(self, res: inp.SubmissionResult) -> None:
        r = self.run
        step = r.step
        if step is None or step.submission_key != res.effect_key:
            self.ignore("SubmissionResult", res.effect_key, "not the current step's submission")
        elif step.submitted is not None:
            self.ignore("SubmissionResult", res.effect_key, "duplicate: already confirmed")
        else:
            # No submission starts once a cancel is asked for, so a cancel on record now was
            # asked for while this one was out, and held (request_cancel).
            held = r.cancel_reason
            was_terminal = r.terminal
            self.emit(
                ev.StepSubmitted,
                r.run_id,
                step_id=step.step_id,
                outcome=res.outcome,
                attempts=res.attempts,
                new_provider_run_id=res.new_provider_run_id,
            )
            if res.seen is not None:
                self.sighted(res.seen)
            elif res.outcome in ("submitted", "already_submitted") and self.works_on():
                pass  # the step is closed, and the working run (or follow-up) is watched
            elif res.new_provider_run_id and not self.run.terminal:
                # The turn continues in the follow-up response: watch that one now.
                self.renew("following the follow-up response")
            if (
                res.outcome == "rejected"
                and not self.run.terminal
                and self.run.phase is not Phase.CANCELLING
            ):
                self.request_cancel(f"submission rejected by the provider: {res.detail}")
            # The held cancel goes to the run the submission left: its follow-up if it made
            # one. Given up meanwhile (the cancel's grace passed): an orphan, cancelled all
            # the same, as a create answered after the run finished is. An outcome that
            # showed the run finished leaves nothing to cancel.
            r = self.run
            finished_now = r.terminal and not was_terminal
            if held is not None and r.provider_run_id is not None and not finished_now:
                self.cancel_intent(r.provider_run_id, held)

    def effect_failed(self, f: inp.EffectFailed) -> None:
        r = self.run
        if r.terminal:
            self.ignore("EffectFailed", f.effect_key, f"run already {r.phase.value}")
        elif f.kind == "create_run" and f.effect_key == r.create_key and not r.provider_run_id:
            self.emit(
                ev.RunFinished,
                r.run_id,
                status="failed",
                reason=f"could not create the provider run: {f.reason}",
            )
        elif f.kind == "observe_run":
            self.emit(
                ev.RunFinished,
                r.run_id,
                status="failed",
                reason=f"could not observe the provider run: {f.reason}",
            )
        elif f.kind == "submit_outputs" and r.step and r.step.submission_key == f.effect_key:
            self.submission(
                inp.SubmissionResult(
                    r.run_id, f.effect_key, r.step.step_id, "rejected", 0, f.reason
                )
            )
        elif f.kind == "tool_call" and (call_id := self.failed_call(f.effect_key)) is not None:
            # The executor gave up on the call (an answer outside the tool's protocol, a
            # bug): the model is told now, not when the step deadline passes.
            step = r.step
            assert step is not None  # failed_call found the call in the open step
            message = f"the tool call could not be carried out: {f.reason}"
            self.record_output(
                step,
                call_id,
                error_output("tool_failed", message),
                error=True,
                source="executor",
                key=f.effect_key,
            )
            self.submit_if_complete("complete")
        else:
            self.ignore("EffectFailed", f.effect_key, f"{f.kind} failed: {f.reason}")

    def failed_call(self, effect_key: str) -> str | None:
        """The call of the open, unsubmitted step whose tool effect this is, if it has no
        output yet; None otherwise (a late or duplicate failure, or not this step's)."""
        r = self.run
        step = r.open_step
        if step is None or step.submission_key is not None or r.phase is Phase.CANCELLING:
            return None
        for c in step.calls:
            key = self.key(step=step.step_id, tool_call_id=c.id, kind="tool_call")
            if key == effect_key and step.output_for(c.id) is None:
                return c.id
        return None

    def tick(self) -> None:
        r = self.run
        if r.terminal:
            return
        if r.give_up_at_ms is not None and self.now >= r.give_up_at_ms:
            self.emit(
                ev.RunFinished,
                r.run_id,
                status="failed",
                reason=f"gave up waiting for the cancel to land ({r.cancel_reason})",
            )
            return
        step = r.open_step
        if step is not None and step.submission_key is None and r.phase is Phase.REQUIRES_ACTION:
            # First: an approval's deadline comes before its step's and the run's budget
            # (request_approval makes it so), even when the ticks came late.
            late = [a for a in step.approvals if a.pending and self.now >= a.deadline_ms]
            for approval in late:
                self.settle(approval, "expired", "not approved in time")
            if late:
                return
        if self.now >= r.run_deadline_ms and r.cancel_reason is None:
            self.request_cancel("run budget exceeded")
            return
        if (
            step is not None
            and step.submission_key is None
            and self.now >= step.deadline_ms
            and r.phase is Phase.REQUIRES_ACTION
        ):
            self.fill_missing(step)
            self.submit_if_complete("deadline")
            return
        if r.provider_run_id is not None and self.now >= self.watch_due(r):
            self.renew("no observation within the watch timeout")

    def end_watch(self, *, before: RunState, message: inp.Input) -> None:
        """When this decision finished the run, stop its watch, unless the watch's own
        report is what finished it (that watch has ended already). The news came from
        elsewhere: most often a submission's answer that followed the run to its end. The
        watch would otherwise poll once more, find the run finished and report what the
        coordinator then ignores. Only a finished run is unwatched: a run that works on
        always keeps a watch."""
        r = self.run
        if before.terminal or not r.terminal or r.watch == 0:
            return
        step = f"watch:{r.watch}"
        match message:
            case inp.RunObserved(watch=w) if w == r.watch:
                return
            case inp.EffectFailed(effect_key=k) if k == self.key(step=step, kind="observe_run"):
                return
        self.intents.append(
            it.EndWatchIntent(
                effect_key=self.key(step=step, kind="end_watch"), **self.common(), watch=r.watch
            )
        )

    def watch_due(self, r: RunState) -> int:
        return r.watch_started_ms + self.policy.watch_timeout_ms + self.policy.watch_grace_ms


def decide(state: RunState | None, message: inp.Input, *, now_ms: int, policy: Policy) -> Decision:
    """The decision on one input. Never raises: a refused input comes back with its reason
    in ``dead_letter`` and the state unchanged."""
    d = _Decider(state, now_ms, policy)
    if state is not None and state.run_id != message.run_id:
        # The caller's slip (the loop looks the state up by the input's run_id), refused
        # like any input that names the wrong run.
        d.reject(f"input for run {message.run_id} decided against run {state.run_id}")
        return d.decision()
    if isinstance(message, inp.StartRun):
        d.start(message)
        return d.decision()
    if state is None:
        if isinstance(message, inp.Tick):
            return d.decision()
        d.reject(f"unknown run {message.run_id}")
        return d.decision()
    match message:
        case inp.CancelRun():
            d.cancel(message)
        case inp.RunCreated():
            d.created(message)
        case inp.RunObserved():
            d.observed(message)
        case inp.ToolResult():
            d.tool_result(message)
        case inp.SubmissionResult():
            d.submission(message)
        case inp.EffectFailed():
            d.effect_failed(message)
        case inp.ApprovalDecision():
            d.approval_decision(message)
        case inp.Tick():
            d.tick()
    d.end_watch(before=state, message=message)
    return d.decision()


def next_due(state: RunState, policy: Policy) -> int | None:
    """When this run next needs a Tick, or None. The loop's timer wheel is built from this."""
    if state.terminal:
        return None
    due = [state.run_deadline_ms]
    if state.give_up_at_ms is not None:
        due.append(state.give_up_at_ms)
    step = state.open_step
    if step is not None and step.submission_key is None and state.phase is Phase.REQUIRES_ACTION:
        due.append(step.deadline_ms)
        due += [a.deadline_ms for a in step.approvals if a.pending]
    if state.provider_run_id is not None:
        due.append(state.watch_started_ms + policy.watch_timeout_ms + policy.watch_grace_ms)
    return min(due)

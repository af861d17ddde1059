"""The tool executor: call a tool gateway at most once per tool call (G1).

Each call is guarded by the ledger and goes through the tool gateway port
(runcoord/tools/gateway.py) with the effect key as its idempotency key and the claim's
fencing token. The gateway only reports what happened (an answer, not sent, or an unknown
outcome); what happens when an attempt's outcome is unknown (a timeout, a reset, a crash
after sending) is decided here, and depends only on the registry:

- read tools have no side effects: send again;
- ``idempotency: key``: send again with the same key, the gateway answers the first result.
  Both are also hedged: a request still unanswered after ``HEDGE_AFTER_MS`` is sent again
  beside it, and the first answer wins;
- ``idempotency: none`` with a ``lookup``: ask the lookup whether it acted, and use that.
  The lookup is also asked while a request is slow to answer (after ``LOOKUP_AFTER_S``):
  an action it finds is the answer, so a slow success costs that wait, not the timeout.
  One action: its answer. More than one: reported (an error output and a dead letter), never
  a third. None: that proves nothing while a request that may still act is on its way (the
  gateway is slow, not dead), so an empty lookup counts only once the deadline of the last
  such request has passed, plus ``CLOCK_SKEW_MARGIN_MS`` (the tool refuses to act on a
  request past its deadline). Until then it asks again, and if the step deadline comes first
  the outcome stays unknown. A lookup that cannot be asked is asked again, up to the step
  deadline too;
- ``idempotency: none`` without one: record ``unknown`` and answer the model with an error
  output saying the action may have happened. Never a blind retry of such a write.

Every request carries the claim's fencing token and a deadline (now + the tool's
``timeout_ms``, fixed before the effect is marked sent). A tool that refuses the token because
it has seen a newer one (ToolFenced) means the effect was taken over: like LeaseLost, the
attempt stops and records nothing. tools.yaml, "Request deadlines and fencing", has the rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runcoord.deadletter import DeadLetter
from runcoord.domain import error_output
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LeaseLost, LedgerGuard, Outcome, Sent
from runcoord.effects.ledger import Acquired, EffectMeta, EffectState, request_hash
from runcoord.effects.limits import ConcurrencyLimiter, Permit
from runcoord.errors import RuncoordError
from runcoord.faults import fault_point
from runcoord.hedging import gravest_first, hedged
from runcoord.registry import MAX_OUTPUT_BYTES, Registry, ToolSpec
from runcoord.tools.gateway import (
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    ToolFenced,
    ToolGateway,
)
from runcoord.tools.intake import Intake, accept

log = logging.getLogger(__name__)

KINDS = frozenset({"tool_call"})
MAYBE_ACTED = "The action may have been performed; it was not retried, to avoid doing it twice."
# How far a tool's clock may lag ours: an empty lookup counts only this long after the deadline
# of the last request that may still act (the tool reads that deadline on its own clock).
CLOCK_SKEW_MARGIN_MS = 1000
# A write with a lookup still unanswered after this long (real time) has its lookup asked
# beside it: a slow success is found in the tool's records instead of at the timeout.
LOOKUP_AFTER_S = 0.5
# A read, or a write with idempotency: key, still unanswered after this long (real time) is
# sent again beside it (the same key), up to three requests in flight. The tool executor
# takes it from RUNCOORD_TOOL_HEDGE_MS (0: never).
HEDGE_AFTER_MS = 500


@dataclass(frozen=True, slots=True)
class _Answer:
    output: str
    is_error: bool
    rejection: str | None = None
    # The tool's own bytes when intake refused them: for the dead letter, never the ledger.
    original: bytes | None = None
    # The lookup found several actions for the one call: (why, what it found) for the report.
    duplicate: tuple[str, bytes] | None = None

    def outcome(self, state: EffectState = EffectState.SUCCEEDED) -> Outcome:
        result = {"output": self.output, "is_error": self.is_error, "rejection": self.rejection}
        return Outcome(state, result)


class ToolCalls:
    def __init__(
        self,
        registry: Registry,
        gateway: ToolGateway,
        guard: LedgerGuard,
        limiter: ConcurrencyLimiter | None = None,
        instance_id: str = "executor",
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lookup_after_s: float = LOOKUP_AFTER_S,
        hedge_after_ms: float | None = HEDGE_AFTER_MS,
    ) -> None:
        self.registry = registry
        self.lookup_after_s = lookup_after_s
        self.hedge_after_ms = hedge_after_ms
        self.gateway = gateway
        self.guard = guard
        self.limiter = limiter
        self.instance_id = instance_id
        # Wall-clock seconds (request deadlines are absolute) and the waits between attempts.
        self.clock = clock
        self.sleep = sleep

    async def __call__(self, intent: it.EffectIntent) -> Sequence[Any]:
        if not isinstance(intent, it.ToolCallIntent):
            raise TypeError(f"{type(intent).__name__} is not a tool call")
        spec = self.registry.tools.get(intent.tool)
        refusal = self.registry.policy().refusal(intent.tenant, intent.tool)
        if spec is None or refusal is not None:
            # The coordinator refuses these before dispatch; this is defence in depth.
            message = refusal or f"unknown tool {intent.tool!r}"
            return [self._result(intent, error_output("not_enabled", message), True)]
        meta = EffectMeta(
            kind="tool_call",
            tenant=intent.tenant,
            run_id=intent.run_id,
            step_id=intent.step_id,
            tool_call_id=intent.tool_call_id,
            request_hash=request_hash({"tool": intent.tool, "arguments": intent.arguments}),
        )

        refused: list[bytes] = []  # what the tool answered, when intake refused it
        duplicates: list[tuple[str, bytes]] = []  # what the lookup found, when it acted twice

        async def act(claim: Acquired, sent: Sent) -> Outcome:
            answer = await self._act(intent, spec, claim, sent)
            if isinstance(answer, _Answer):
                if answer.original is not None:
                    refused.append(answer.original)
                if answer.duplicate is not None:
                    duplicates.append(answer.duplicate)
                return answer.outcome()
            return answer

        settled = await self.guard.run(intent.effect_key, meta, act)
        result = settled.result if isinstance(settled.result, dict) else {}
        output = str(result.get("output") or error_output("failed", settled.error or "failed"))
        reports: list[Any] = [self._result(intent, output, bool(result.get("is_error", True)))]
        rejection = result.get("rejection")
        if rejection and not settled.replayed:
            original = refused[-1] if refused else None
            reports.append(self._dead_letter(intent, str(rejection), original))
        if duplicates and not settled.replayed:
            reason, found = duplicates[-1]
            reports.append(self._dead_letter(intent, reason, found, kind="duplicate_action"))
        return reports

    async def _act(
        self, intent: it.ToolCallIntent, spec: ToolSpec, claim: Acquired, sent: Sent
    ) -> Outcome | _Answer:
        permit = await self._permit(intent)
        try:
            return await self._attempts(intent, spec, claim, sent)
        finally:
            if permit is not None and self.limiter is not None:
                self.limiter.release(permit)

    async def _attempts(
        self, intent: it.ToolCallIntent, spec: ToolSpec, claim: Acquired, sent: Sent
    ) -> Outcome | _Answer:
        unknown = claim.previous_sent and spec.write
        reconciled = spec.idempotency == "none" and spec.lookup is not None
        # The deadline (unix ms) of the last request that may still act: before it has passed
        # (plus the margin), a lookup that finds nothing proves nothing.
        in_flight_until = 0
        if unknown and reconciled:
            in_flight_until = await self._predecessor_deadline(intent, spec)
        pause = 0.1
        while True:
            if unknown and spec.idempotency == "none":
                if spec.lookup is None:
                    return _Answer(error_output("unknown_outcome", MAYBE_ACTED), True).outcome(
                        EffectState.UNKNOWN
                    )
                found = await self._reconcile(intent, spec, in_flight_until)
                if found is not None:
                    return found
                unknown = False  # it never acted, and no request of ours can any more
            if self._now_ms() >= intent.deadline_ms:
                return self._late(intent, spec, unknown)
            # Fixed before the effect is marked sent: _predecessor_deadline relies on it.
            deadline_ms = self._now_ms() + spec.timeout_ms
            await sent()
            try:
                if reconciled:
                    return await self._send_looking(intent, spec, claim.token, deadline_ms)
                if not spec.write or spec.idempotency == "key":
                    return await self._send_hedged(intent, spec, claim.token, deadline_ms)
                return await self._send(intent, spec, claim.token, deadline_ms)
            except OutcomeUnknown as exc:
                log.info(
                    "%s %s: outcome unknown (%s)",
                    intent.tool_call_id,
                    spec.name,
                    exc,
                    extra=it.log_ids(intent),
                )
                unknown = spec.write
                in_flight_until = max(in_flight_until, deadline_ms)
            except NotSent as exc:
                log.info(
                    "%s %s: not sent (%s)",
                    intent.tool_call_id,
                    spec.name,
                    exc,
                    extra=it.log_ids(intent),
                )
            except ToolFenced as exc:
                # The tool has seen a newer holder's token: our lease lapsed and the effect was
                # taken over. Its outcome is the one of record; ours must not be.
                raise LeaseLost(
                    f"effect {intent.effect_key}: the tool refused fencing token {claim.token} "
                    f"({exc})"
                ) from exc
            await self.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _late(self, intent: it.ToolCallIntent, spec: ToolSpec, unknown: bool) -> Outcome:
        message = f"{spec.name} did not answer before the step deadline."
        if unknown:
            return _Answer(
                error_output("unknown_outcome", f"{message} {MAYBE_ACTED}"), True
            ).outcome(EffectState.UNKNOWN)
        return _Answer(error_output("timeout", message), True).outcome(EffectState.FAILED)

    async def _predecessor_deadline(self, intent: it.ToolCallIntent, spec: ToolSpec) -> int:
        """The latest deadline (unix ms) a request of an earlier attempt can carry. That attempt
        fixed its deadline (its clock + ``timeout_ms``) before marking the effect sent, and it
        could mark it only while its lease was live, so before we claimed it: now +
        ``timeout_ms`` bounds it, and the ledger's ``sent_at`` (its last mark) more tightly."""
        bound = self._now_ms() + spec.timeout_ms
        try:
            record = await self.guard.ledger.get(intent.effect_key)
        except RuncoordError as exc:
            log.info("%s: ledger not read (%s); assuming a recent send", intent.effect_key, exc)
            return bound
        if record is None or record.sent_at is None:
            return bound
        return min(bound, int(record.sent_at.timestamp() * 1000) + spec.timeout_ms)

    async def _reconcile(
        self, intent: it.ToolCallIntent, spec: ToolSpec, in_flight_until: int
    ) -> Outcome | _Answer | None:
        """After an unknown outcome, what the tool's lookup says: its answer if it acted once,
        a report if it acted more than once, None if it never acted and no request that may
        still act is on its way, and an unknown outcome if the step deadline comes first.
        Never sends."""
        trusted_from = in_flight_until + CLOCK_SKEW_MARGIN_MS
        pause_ms = 100
        while True:
            asked_at = self._now_ms()
            if asked_at >= intent.deadline_ms:
                return self._late(intent, spec, unknown=True)
            try:
                actions = await self._lookup(intent, spec)
            except LookupUnavailable as exc:
                log.info(
                    "%s %s: lookup unavailable (%s)",
                    intent.tool_call_id,
                    spec.name,
                    exc,
                    extra=it.log_ids(intent),
                )
            else:
                if len(actions) > 1:
                    return self._duplicate(intent, spec, actions)
                if actions:
                    return _found(spec, actions[0])
                if asked_at >= trusted_from:
                    return None
            wake = min(asked_at + pause_ms, intent.deadline_ms)
            if asked_at < trusted_from:
                wake = min(wake, trusted_from)
            await self.sleep(max(0, wake - self._now_ms()) / 1000)
            pause_ms = min(pause_ms * 2, 2000)

    async def _send(
        self, intent: it.ToolCallIntent, spec: ToolSpec, token: int, deadline_ms: int
    ) -> _Answer:
        try:
            arguments = json.loads(intent.arguments or "{}")
        except json.JSONDecodeError as exc:
            return _Answer(
                error_output("invalid_arguments", f"arguments are not JSON: {exc}"), True
            )
        # Raises NotSent, OutcomeUnknown or ToolFenced (the caller decides what they mean).
        answer = await self.gateway.call(
            spec,
            arguments,
            effect_key=intent.effect_key,
            fencing_token=token,
            tenant=intent.tenant,
            run_id=intent.run_id,
            tool_call_id=intent.tool_call_id,
            timeout_s=max(deadline_ms - self._now_ms(), 1) / 1000,
            deadline_ms=deadline_ms,
        )
        if not answer.ok:
            return _Answer(error_output("tool_error", answer.message()), True)
        fault_point("tool.after_send")  # the tool acted and answered; nothing recorded yet
        intake = accept(spec, answer.body)
        return _refused_or_not(intake, answer.body)

    async def _send_hedged(
        self, intent: it.ToolCallIntent, spec: ToolSpec, token: int, deadline_ms: int
    ) -> _Answer:
        """Send; while no answer has come, the same request again beside it every
        ``hedge_after_ms`` (runcoord/hedging.py), until the request's deadline. Only for calls
        a repeat cannot make act twice: reads, and writes with ``idempotency: key`` (the same
        key: the tool answers the first result), which the registry already allows to be sent
        again while an earlier request may still be on its way. The first answer wins; when
        none answers, the gravest failure is raised (fenced, then unknown, then not sent), so
        an attempt that may have acted is never taken for one that did not. A slow success
        (acted, answer late) then costs the hedge interval, not the tool's timeout."""

        def send() -> Awaitable[_Answer]:
            return self._send(intent, spec, token, deadline_ms)

        return await hedged(
            send,
            self.hedge_after_ms,
            more=lambda: self._now_ms() < deadline_ms,
            gravity=_GRAVITY,
        )

    async def _send_looking(
        self, intent: it.ToolCallIntent, spec: ToolSpec, token: int, deadline_ms: int
    ) -> _Answer:
        """Send; while the answer is slow in coming, ask the lookup beside it (after
        ``lookup_after_s``, then at doubling intervals). A slow success (the tool acted and
        its answer is late) is then known from the tool's own records instead of at the
        request's timeout. Only an action found ends the wait: none found proves nothing
        while the request is on its way. Never sends twice; the request is dropped once its
        action is found."""
        sending = asyncio.ensure_future(self._send(intent, spec, token, deadline_ms))
        try:
            wait_s = self.lookup_after_s
            while True:
                done, _ = await asyncio.wait({sending}, timeout=wait_s)
                if done:
                    return sending.result()  # the answer, or NotSent / OutcomeUnknown / ...
                try:
                    actions = await self._lookup(intent, spec)
                except LookupUnavailable:
                    actions = ()
                if len(actions) > 1:
                    return self._duplicate(intent, spec, actions)
                if actions:
                    log.info(
                        "%s %s: the answer is slow; the lookup found the action",
                        intent.tool_call_id,
                        spec.name,
                        extra=it.log_ids(intent),
                    )
                    return _found(spec, actions[0])
                wait_s = min(wait_s * 2, 2.0)
        finally:
            sending.cancel()

    async def _lookup(
        self, intent: it.ToolCallIntent, spec: ToolSpec
    ) -> tuple[Mapping[str, Any], ...]:
        """The tool's records of acting on this key. Raises LookupUnavailable when the lookup
        cannot be asked."""
        assert spec.lookup is not None
        remaining_ms = intent.deadline_ms - self._now_ms()
        lookup = await self.gateway.lookup(
            spec,
            effect_key=intent.effect_key,
            tenant=intent.tenant,
            timeout_s=max(min(spec.timeout_ms, remaining_ms), 50) / 1000,
        )
        return lookup.actions

    def _duplicate(
        self, intent: it.ToolCallIntent, spec: ToolSpec, actions: tuple[Mapping[str, Any], ...]
    ) -> _Answer:
        """The tool acted more than once for this one call (tools.yaml: "it already acted
        twice; report, do not add a third"): the model is told, triage gets a dead letter."""
        ids = [a.get("audit_id") for a in actions]
        reason = (
            f"{spec.name} acted {len(actions)} times for effect key {intent.effect_key} "
            f"(tool call {intent.tool_call_id}; the tool's records {ids}); not sent again"
        )
        log.error("%s", reason, extra=it.log_ids(intent))
        first = json.dumps(actions[0].get("response"), separators=(",", ":"), default=str)
        message = (
            f"{spec.name} was performed {len(actions)} times for this one call; it was not "
            f"sent again. The first answer: {first[:500]}"
        )
        found = json.dumps(
            {
                "tool": spec.name,
                "effect_key": intent.effect_key,
                "actions": list(map(dict, actions)),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        return _Answer(error_output("duplicate_action", message), True, duplicate=(reason, found))

    async def _permit(self, intent: it.ToolCallIntent) -> Permit | None:
        if self.limiter is None:
            return None
        pause = 0.05
        while True:
            permit = self.limiter.acquire(intent.tenant, intent.tool)  # local: no I/O once joined
            if permit is not None:
                return permit
            if self._now_ms() >= intent.deadline_ms:
                return None  # past the deadline anyway: the attempt reports the timeout
            await self.sleep(pause)  # backpressure: wait for a slot, don't overload
            pause = min(pause * 2, 1.0)

    def _result(self, intent: it.ToolCallIntent, output: str, is_error: bool) -> inp.ToolResult:
        return inp.ToolResult(
            intent.run_id,
            intent.tenant,
            intent.step_id,
            intent.tool_call_id,
            output,
            is_error,
            "tool",
            intent.effect_key,
        )

    def _dead_letter(
        self,
        intent: it.ToolCallIntent,
        reason: str,
        original: bytes | None,
        kind: str = "validation",
    ) -> DeadLetter:
        # The tool's own answer, so triage sees what was refused (the effect key names the
        # call if there is none). Capped: a dead letter must still fit one Kafka record, and
        # an oversize answer may be of any size.
        payload = original if original is not None else intent.effect_key.encode()
        if len(payload) > MAX_OUTPUT_BYTES:
            reason = f"{reason} (first {MAX_OUTPUT_BYTES} of {len(payload)} bytes kept)"
            payload = payload[:MAX_OUTPUT_BYTES]
        return DeadLetter(
            source_topic="effects",
            partition=0,
            offset=0,
            key=intent.run_id,
            kind=kind,
            reason=reason,
            record_name="ToolCallIntent",
            payload=payload,
            consumer=self.instance_id,
            at_ms=self._now_ms(),
        )


# How much a failed request says: a newer holder (fenced), then maybe acted (unknown), then
# surely not acted (not sent).
_GRAVITY = gravest_first(ToolFenced, OutcomeUnknown, NotSent)


def _found(spec: ToolSpec, action: Mapping[str, Any]) -> _Answer:
    """The one action the lookup found: the tool's own answer, through output intake."""
    response = action.get("response")
    body = json.dumps(response if response is not None else dict(action)).encode()
    return _refused_or_not(accept(spec, body), body)


def _refused_or_not(intake: Intake, body: bytes) -> _Answer:
    original = body if intake.rejection is not None else None
    return _Answer(intake.output, intake.is_error, intake.rejection, original)

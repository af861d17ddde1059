"""The tool executor: call a tool gateway at most once per tool call (G1).

Each call is guarded by the ledger and goes through the tool gateway port
(runcoord/tools/gateway.py) with the effect key as its idempotency key and the claim's
fencing token. The gateway only reports what happened (an answer, not sent, or an unknown
outcome); what happens when an attempt's outcome is unknown (a timeout, a reset, a crash
after sending) is decided here, and depends only on the registry:

- read tools have no side effects: send again;
- ``idempotency: key``: send again with the same key, the gateway answers the first result;
- ``idempotency: none`` with a ``lookup``: ask the lookup whether it acted, and use that;
- ``idempotency: none`` without one: record ``unknown`` and answer the model with an error
  output saying the action may have happened. Never a blind retry of such a write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runcoord.deadletter import DeadLetter
from runcoord.domain import error_output
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard, Outcome, Sent
from runcoord.effects.ledger import Acquired, EffectMeta, EffectState, request_hash
from runcoord.effects.limits import ConcurrencyLimiter, Permit
from runcoord.faults import fault_point
from runcoord.registry import MAX_OUTPUT_BYTES, Registry, ToolSpec
from runcoord.tools.gateway import NotSent, OutcomeUnknown, ToolGateway
from runcoord.tools.intake import Intake, accept

log = logging.getLogger(__name__)

KINDS = frozenset({"tool_call"})
MAYBE_ACTED = "The action may have been performed; it was not retried, to avoid doing it twice."


@dataclass(frozen=True, slots=True)
class _Answer:
    output: str
    is_error: bool
    rejection: str | None = None
    # The tool's own bytes when intake refused them: for the dead letter, never the ledger.
    original: bytes | None = None

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
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        self.guard = guard
        self.limiter = limiter
        self.instance_id = instance_id

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

        async def act(claim: Acquired, sent: Sent) -> Outcome:
            answer = await self._act(intent, spec, claim, sent)
            if isinstance(answer, _Answer):
                if answer.original is not None:
                    refused.append(answer.original)
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
        return reports

    async def _act(
        self, intent: it.ToolCallIntent, spec: ToolSpec, claim: Acquired, sent: Sent
    ) -> Outcome | _Answer:
        permit = await self._permit(intent)
        try:
            unknown = claim.previous_sent and spec.write
            pause = 0.1
            while True:
                if unknown and spec.idempotency == "none":
                    if spec.lookup is None:
                        return _Answer(error_output("unknown_outcome", MAYBE_ACTED), True).outcome(
                            EffectState.UNKNOWN
                        )
                    found = await self._lookup(intent, spec)
                    if found is not None:
                        return found
                    unknown = False  # the lookup says it did not act: sending is safe
                if time.time() * 1000 >= intent.deadline_ms:
                    return self._late(intent, spec, unknown)
                await sent()
                try:
                    return await self._send(intent, spec, claim.token)
                except OutcomeUnknown as exc:
                    log.info(
                        "%s %s: outcome unknown (%s)",
                        intent.tool_call_id,
                        spec.name,
                        exc,
                        extra=it.log_ids(intent),
                    )
                    unknown = spec.write
                except NotSent as exc:
                    log.info(
                        "%s %s: not sent (%s)",
                        intent.tool_call_id,
                        spec.name,
                        exc,
                        extra=it.log_ids(intent),
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        finally:
            if permit is not None and self.limiter is not None:
                await asyncio.to_thread(self.limiter.release, permit)

    def _late(self, intent: it.ToolCallIntent, spec: ToolSpec, unknown: bool) -> Outcome:
        message = f"{spec.name} did not answer before the step deadline."
        if unknown:
            return _Answer(
                error_output("unknown_outcome", f"{message} {MAYBE_ACTED}"), True
            ).outcome(EffectState.UNKNOWN)
        return _Answer(error_output("timeout", message), True).outcome(EffectState.FAILED)

    async def _send(self, intent: it.ToolCallIntent, spec: ToolSpec, token: int) -> _Answer:
        try:
            arguments = json.loads(intent.arguments or "{}")
        except json.JSONDecodeError as exc:
            return _Answer(
                error_output("invalid_arguments", f"arguments are not JSON: {exc}"), True
            )
        # Raises NotSent or OutcomeUnknown (the caller decides what they mean for this tool).
        answer = await self.gateway.call(
            spec,
            arguments,
            effect_key=intent.effect_key,
            fencing_token=token,
            tenant=intent.tenant,
            run_id=intent.run_id,
            tool_call_id=intent.tool_call_id,
            timeout_s=spec.timeout_ms / 1000,
        )
        if not answer.ok:
            return _Answer(error_output("tool_error", answer.message()), True)
        fault_point("tool.after_send")  # the tool acted and answered; nothing recorded yet
        intake = accept(spec, answer.body)
        return _refused_or_not(intake, answer.body)

    async def _lookup(self, intent: it.ToolCallIntent, spec: ToolSpec) -> _Answer | None:
        """The tool's own answer if its lookup says it acted on this key, else None.
        Raises LookupUnavailable when the lookup cannot be asked."""
        assert spec.lookup is not None
        lookup = await self.gateway.lookup(
            spec,
            effect_key=intent.effect_key,
            tenant=intent.tenant,
            timeout_s=spec.timeout_ms / 1000,
        )
        actions = lookup.actions
        if not actions:
            return None
        found = actions[0].get("response")
        body = json.dumps(found if found is not None else dict(actions[0])).encode()
        intake = accept(spec, body)
        return _refused_or_not(intake, body)

    async def _permit(self, intent: it.ToolCallIntent) -> Permit | None:
        if self.limiter is None:
            return None
        pause = 0.05
        while True:
            permit = await asyncio.to_thread(self.limiter.acquire, intent.tenant, intent.tool)
            if permit is not None:
                return permit
            if time.time() * 1000 >= intent.deadline_ms:
                return None  # past the deadline anyway: the attempt reports the timeout
            await asyncio.sleep(pause)  # backpressure: wait for a slot, don't overload
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
        self, intent: it.ToolCallIntent, reason: str, original: bytes | None
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
            kind="validation",
            reason=reason,
            record_name="ToolCallIntent",
            payload=payload,
            consumer=self.instance_id,
            at_ms=int(time.time() * 1000),
        )


def _refused_or_not(intake: Intake, body: bytes) -> _Answer:
    original = body if intake.rejection is not None else None
    return _Answer(intake.output, intake.is_error, intake.rejection, original)

"""The submission executor: one submission of a step's outputs, exactly once.

Guarded by the ledger (one row per step's submission key). After an unknown outcome (a
lost answer, or a take-over of an attempt that had sent) the provider's records decide:
already answered means done; a run that moved on is recorded, not retried; a step still
waiting unanswered is safe to send again; where the provider cannot tell, the outcome is
recorded as unknown, never guessed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard, Outcome, Sent
from runcoord.effects.ledger import Acquired, EffectMeta, EffectState, request_hash
from runcoord.errors import ConfigError
from runcoord.faults import fault_point
from runcoord.provider.errors import OutcomeUnknown, ProviderRejected, ProviderUnavailable
from runcoord.provider.port import RunProvider, SubmitOutcome, Turn, sighting

log = logging.getLogger(__name__)

KINDS = frozenset({"submit_outputs"})


class Submissions:
    def __init__(self, providers: Mapping[str, RunProvider], guard: LedgerGuard) -> None:
        self.providers = providers
        self.guard = guard

    async def __call__(self, intent: it.EffectIntent) -> Sequence[inp.Input]:
        if not isinstance(intent, it.SubmitOutputsIntent):
            raise TypeError(f"{type(intent).__name__} is not a submission")
        provider = self.providers.get(intent.provider)
        if provider is None:
            raise ConfigError(f"no adapter configured for provider {intent.provider!r}")
        meta = EffectMeta(
            kind="submit_outputs",
            tenant=intent.tenant,
            run_id=intent.run_id,
            step_id=intent.step_id,
            tool_call_id=None,
            request_hash=request_hash({o.tool_call_id: o.payload_hash for o in intent.outputs}),
        )
        sends = 0
        seen: inp.Sighting | None = None  # where this attempt's submission left the run
        # An intent written before v2 names no assistant: the adapter reads the step instead.
        turn = (
            Turn(intent.run_id, intent.assistant_id, intent.metadata)
            if intent.assistant_id
            else None
        )

        async def act(claim: Acquired, sent: Sent) -> Outcome:
            nonlocal sends, seen
            if claim.previous_sent:
                decided = await self._reconcile(provider, intent)
                if decided is not None:
                    return decided
            # No request of ours has reached the provider yet, and nothing else answers the
            # step while we are out (the coordinator holds a cancel till our outcome): the
            # adapter need not look first. Once a request may have acted, it must.
            unanswered = not claim.previous_sent
            while True:
                if time.time() * 1000 > intent.deadline_ms:
                    return _outcome(SubmitOutcome("run_moved_on", "past the run's deadline"))
                await sent()
                sends += 1
                try:
                    out = await provider.submit_outputs(
                        thread_id=intent.thread_id,
                        provider_run_id=intent.provider_run_id,
                        step_id=intent.step_id,
                        outputs=intent.outputs,
                        effect_key=intent.effect_key,
                        turn=turn,
                        unanswered=unanswered,
                    )
                    fault_point("submit.after_send")  # accepted, not yet recorded
                    seen = sighting(out.seen)
                    return _outcome(out)
                except OutcomeUnknown as exc:
                    unanswered = False
                    log.info(
                        "%s/%s: submission outcome unknown (%s); reconciling",
                        intent.run_id,
                        intent.step_id,
                        exc,
                        extra=it.log_ids(intent),
                    )
                    decided = await self._reconcile(provider, intent)
                    if decided is not None:
                        return decided
                except ProviderUnavailable:
                    pass  # nothing applied: send again after a pause
                except ProviderRejected as exc:
                    return _outcome(SubmitOutcome("rejected", str(exc)))
                await asyncio.sleep(min(0.2 * sends, 2.0))

        settled = await self.guard.run(intent.effect_key, meta, act, sends_at_once=True)
        result = settled.result if isinstance(settled.result, dict) else {}
        outcome = str(result.get("outcome") or settled.state.value)
        attempts = max(sends, 1) if not settled.replayed else max(settled.attempt, 1)
        return [
            inp.SubmissionResult(
                intent.run_id,
                intent.effect_key,
                intent.step_id,
                outcome,
                attempts,
                result.get("detail") or settled.error,
                result.get("new_provider_run_id"),
                seen=None if settled.replayed else seen,
            )
        ]

    async def _reconcile(
        self, provider: RunProvider, intent: it.SubmitOutputsIntent
    ) -> Outcome | None:
        """The outcome the provider's records show, or None when sending is safe."""
        while True:
            try:
                found = await provider.reconcile_submission(
                    thread_id=intent.thread_id,
                    provider_run_id=intent.provider_run_id,
                    step_id=intent.step_id,
                    outputs=intent.outputs,
                )
                break
            except ProviderUnavailable:
                await asyncio.sleep(0.5)
        if found is None:
            return Outcome(
                EffectState.UNKNOWN,
                {
                    "outcome": "unknown",
                    "detail": "the provider cannot tell whether the outputs landed",
                },
            )
        if found.outcome == "not_submitted":
            return None
        return _outcome(found)


def _outcome(out: SubmitOutcome) -> Outcome:
    state = EffectState.FAILED if out.outcome == "rejected" else EffectState.SUCCEEDED
    return Outcome(
        state,
        {
            "outcome": out.outcome,
            "detail": out.detail,
            "new_provider_run_id": out.new_provider_run_id,
        },
    )

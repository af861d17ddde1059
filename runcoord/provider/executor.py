"""Provider effects: create the provider run, watch it (and stop watching it), cancel it.

create_run is guarded by the ledger, and the adapter reconciles by the run_id in the run's
metadata, so neither a redelivery nor a crash after sending makes a second provider run.
Watches and cancels change nothing that a repeat could duplicate, so they need no ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.ids import conversation_key
from runcoord.effects.guard import LedgerGuard, Outcome, Sent
from runcoord.effects.ledger import Acquired, EffectMeta, EffectState, request_hash
from runcoord.errors import ConfigError
from runcoord.faults import fault_point
from runcoord.provider.errors import (
    OutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    Unreconcilable,
)
from runcoord.provider.port import CONVERSATION_KEY, RunProvider, sighting

log = logging.getLogger(__name__)

KINDS = frozenset({"create_run", "observe_run", "end_watch", "cancel_run"})


# A create that keeps meeting an unavailable provider (a thread still busy with the previous
# turn's run, 429s, a provider that is down) gives up after this long. Retrying for ever kept
# the intent in flight, and with it the executor's committed offset: a restart then replayed
# tens of thousands of intents (seen in the 50k chaos soak).
CREATE_GIVE_UP_S = 120.0
_RETRY_FIRST_S, _RETRY_CAP_S = 0.2, 5.0


class ProviderEffects:
    """The handler of the provider executor; one provider adapter per protocol name."""

    def __init__(
        self,
        providers: Mapping[str, RunProvider],
        guard: LedgerGuard,
        *,
        create_give_up_s: float = CREATE_GIVE_UP_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.providers = providers
        self.guard = guard
        self.create_give_up_s = create_give_up_s
        self._clock = clock
        self._sleep = sleep
        # The watch in flight per run: its number, and what ends it when a newer one comes.
        self._watching: dict[str, tuple[int, asyncio.Event]] = {}

    def provider(self, intent: it.Intent) -> RunProvider:
        try:
            return self.providers[intent.provider]
        except KeyError:
            raise ConfigError(f"no adapter configured for provider {intent.provider!r}") from None

    async def __call__(self, intent: it.EffectIntent) -> Sequence[inp.Input]:
        match intent:
            case it.CreateRunIntent():
                return await self.create(intent)
            case it.ObserveRunIntent():
                return await self.observe(intent)
            case it.EndWatchIntent():
                self.end_watch(intent)
                return []
            case it.CancelRunIntent():
                return await self.cancel(intent)
        raise TypeError(f"{type(intent).__name__} is not a provider effect")

    async def create(self, intent: it.CreateRunIntent) -> Sequence[inp.Input]:
        provider = self.provider(intent)
        thread_id = intent.thread_id
        if intent.conversation:
            # The turn's thread_id is the tenant's own conversation id: its provider thread
            # is ours to create, once, whichever of its turns comes first.
            found = await self.thread_of(intent, provider)
            if isinstance(found, inp.EffectFailed):
                return [found]
            thread_id = found
        meta = EffectMeta(
            kind="create_run",
            tenant=intent.tenant,
            run_id=intent.run_id,
            step_id=None,
            tool_call_id=None,
            request_hash=request_hash(
                {
                    "thread": intent.thread_id,
                    "assistant": intent.assistant_id,
                    "input": intent.input,
                }
            ),
        )

        # Where this attempt's create left the run, when it followed it (never from the
        # ledger: a stored outcome's state may be long gone by the time it is replayed).
        seen: inp.Sighting | None = None

        async def act(claim: Acquired, sent: Sent) -> Outcome:
            nonlocal seen
            unknown = claim.previous_sent  # an earlier attempt may have created it
            last: str | None = None
            started = self._clock()
            delay = _RETRY_FIRST_S
            while True:
                waited = self._clock() - started
                if waited >= self.create_give_up_s:
                    why = f"gave up after {waited:.0f} s of retries: {last}"
                    # If an attempt may have created the run, we cannot say it failed.
                    state = EffectState.UNKNOWN if unknown else EffectState.FAILED
                    return Outcome(state, None, why)
                await sent()
                try:
                    run, reconciled = await provider.create_run(
                        run_id=intent.run_id,
                        thread_id=thread_id,
                        assistant_id=intent.assistant_id,
                        input=intent.input,
                        effect_key=intent.effect_key,
                        after_unknown_outcome=unknown,
                        metadata=dict(intent.metadata),
                    )
                except OutcomeUnknown as exc:
                    log.info(
                        "%s: create-run outcome unknown (%s); reconciling",
                        intent.run_id,
                        exc,
                        extra=it.log_ids(intent),
                    )
                    unknown, last = True, str(exc)
                    await self._sleep(delay)
                    delay = min(delay * 2, _RETRY_CAP_S)
                    continue
                except ProviderUnavailable as exc:
                    if last is None:
                        log.info(
                            "%s: provider unavailable for create-run (%s); retrying for up to"
                            " %.0f s",
                            intent.run_id,
                            exc,
                            self.create_give_up_s,
                            extra=it.log_ids(intent),
                        )
                    last = str(exc)
                    await self._sleep(delay)
                    delay = min(delay * 2, _RETRY_CAP_S)
                    continue
                except ProviderRejected as exc:
                    return Outcome(EffectState.FAILED, None, str(exc))
                except Unreconcilable as exc:
                    return Outcome(EffectState.UNKNOWN, None, str(exc))
                # The provider has the run; our ledger does not know yet. A crash here is
                # what reconciliation by run_id exists for.
                fault_point("provider.after_create")
                seen = sighting(run)
                return Outcome(
                    EffectState.SUCCEEDED,
                    {
                        "provider_run_id": run.provider_run_id,
                        "provider_thread_id": thread_id,
                        "status": run.status,
                        "expires_at_ms": run.expires_at_ms,
                        "reconciled": reconciled,
                    },
                )

        settled = await self.guard.run(intent.effect_key, meta, act, sends_at_once=True)
        if settled.state is EffectState.SUCCEEDED and isinstance(settled.result, dict):
            r = settled.result
            return [
                inp.RunCreated(
                    intent.run_id,
                    intent.effect_key,
                    str(r["provider_run_id"]),
                    str(r["status"]),
                    r.get("expires_at_ms"),
                    bool(r.get("reconciled")) or settled.replayed,
                    provider_thread_id=str(r.get("provider_thread_id") or thread_id),
                    seen=None if settled.replayed else seen,
                )
            ]
        return [
            inp.EffectFailed(
                intent.run_id, intent.effect_key, "create_run", settled.error or settled.state.value
            )
        ]

    async def thread_of(
        self, intent: it.CreateRunIntent, provider: RunProvider
    ) -> str | inp.EffectFailed:
        """The provider thread of the turn's conversation, created under the ledger at most
        once per (tenant, conversation, protocol): the ledger row is the mapping, and every
        later turn of the conversation gets it back from there. After an unknown outcome the
        create is sent again with the same Idempotency-Key, which the provider answers with
        the thread the lost create made (no API lists threads to look it up)."""
        key = conversation_key(
            tenant=intent.tenant, conversation=intent.thread_id, provider=intent.provider
        )
        meta = EffectMeta(
            kind="create_thread",
            tenant=intent.tenant,
            run_id=intent.run_id,  # the turn that created it: forensics
            step_id=None,
            tool_call_id=None,
            request_hash=request_hash(
                {"conversation": intent.thread_id, "provider": intent.provider}
            ),
        )

        async def act(claim: Acquired, sent: Sent) -> Outcome:
            started, delay, last = self._clock(), _RETRY_FIRST_S, ""
            while self._clock() - started < self.create_give_up_s:
                await sent()
                try:
                    thread_id = await provider.create_thread(
                        conversation=f"{intent.tenant}/{intent.thread_id}",
                        effect_key=key,
                        metadata={CONVERSATION_KEY: intent.thread_id},
                    )
                except (OutcomeUnknown, ProviderUnavailable) as exc:
                    last = str(exc)  # the same key again: never a second thread
                    await self._sleep(delay)
                    delay = min(delay * 2, _RETRY_CAP_S)
                    continue
                except ProviderRejected as exc:
                    return Outcome(EffectState.FAILED, None, str(exc))
                fault_point("provider.after_create_thread")  # created; the ledger not told
                return Outcome(EffectState.SUCCEEDED, {"thread_id": thread_id})
            # The same key may still be honoured later: not FAILED, never a blind second.
            return Outcome(EffectState.UNKNOWN, None, f"gave up creating the thread: {last}")

        settled = await self.guard.run(key, meta, act, sends_at_once=True)
        if settled.state is EffectState.SUCCEEDED and isinstance(settled.result, dict):
            return str(settled.result["thread_id"])
        why = settled.error or settled.state.value
        return inp.EffectFailed(
            intent.run_id, intent.effect_key, "create_run", f"conversation thread: {why}"
        )

    async def observe(self, intent: it.ObserveRunIntent) -> Sequence[inp.Input]:
        """Watch the run and report what changed. A newer watch of the same run ends this
        one without a report: the coordinator keeps one watch per run, numbered in order,
        so by the time it asked for the newer one the older is stale (it would ignore the
        report), and polling on for it would only cost requests."""
        held = self._watching.get(intent.run_id)
        if held is not None and held[0] > intent.watch:
            return []  # an older watch delivered late
        if held is not None:
            held[1].set()
        superseded = asyncio.Event()
        mine = (intent.watch, superseded)
        self._watching[intent.run_id] = mine
        watching = asyncio.ensure_future(
            self.provider(intent).watch(
                thread_id=intent.thread_id,
                provider_run_id=intent.provider_run_id,
                since_status=intent.since_status,
                since_step=intent.since_step,
                timeout_ms=intent.timeout_ms,
            )
        )
        ending = asyncio.ensure_future(superseded.wait())
        try:
            await asyncio.wait((watching, ending), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ending.cancel()
            if not watching.done():
                watching.cancel()
            if self._watching.get(intent.run_id) is mine:
                del self._watching[intent.run_id]
        if not watching.done() or watching.cancelled():
            return []
        try:
            run, changed = watching.result()
        except ProviderRejected as exc:  # the run is gone (404) or we may not read it
            return [inp.EffectFailed(intent.run_id, intent.effect_key, "observe_run", str(exc))]
        return [
            inp.RunObserved(
                intent.run_id,
                intent.watch,
                run.status,
                run.step_id,
                run.tool_calls,
                run.expires_at_ms,
                run.detail,
                changed,
            )
        ]

    def end_watch(self, intent: it.EndWatchIntent) -> None:
        """End the run's watch in flight if it is the one named or an older one, without a
        report: the run finished by other news. A newer watch of the run is left alone."""
        held = self._watching.get(intent.run_id)
        if held is not None and held[0] <= intent.watch:
            held[1].set()

    async def cancel(self, intent: it.CancelRunIntent) -> Sequence[inp.Input]:
        try:
            status = await self.provider(intent).cancel(
                thread_id=intent.thread_id, provider_run_id=intent.provider_run_id
            )
        except ProviderRejected as exc:
            return [inp.EffectFailed(intent.run_id, intent.effect_key, "cancel_run", str(exc))]
        log.info("%s: cancel asked (%s); provider says %s", intent.run_id, intent.reason, status)
        return []  # the watch reports what the cancel did

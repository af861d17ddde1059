"""Running one side effect under the ledger: at most once per effect key (G1).

Every ledger-guarded executor (create-run, tool calls, submissions) goes through
:meth:`LedgerGuard.run`; only the ``act`` callback differs. The callback calls ``sent()``
right before touching the outside world; ``sent()`` refuses when we have been fenced (our
lease lapsed and someone took over), and the lease is renewed while the callback works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runcoord.effects.ledger import (
    JSON,
    Acquired,
    AsyncLedger,
    Busy,
    EffectMeta,
    EffectState,
    Finished,
    Ledger,
)
from runcoord.effects.ledger.port import on_loop
from runcoord.errors import Fatal, Retriable

log = logging.getLogger(__name__)


class LeaseLost(Fatal):
    """We no longer hold the effect: another executor took it over. Do not act."""


class ClaimBusy(Retriable):
    """Another executor holds the effect's lease; try again after it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    state: EffectState
    result: JSON = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """The effect's final outcome, whoever reached it."""

    state: EffectState
    result: JSON
    error: str | None
    attempt: int
    replayed: bool  # True: a stored outcome; the outside world was not touched this time


Sent = Callable[[], Awaitable[None]]
Act = Callable[[Acquired, Sent], Awaitable[Outcome]]


class LedgerGuard:
    def __init__(
        self,
        ledger: AsyncLedger | Ledger,
        owner: str,
        lease_s: float = 30.0,
        store_patience_s: float = 120.0,
    ) -> None:
        # The executors pass an AsyncPostgresLedger; a blocking ledger (tests) runs on threads.
        self.ledger = on_loop(ledger)
        self.owner = owner
        self.lease_s = lease_s
        self.store_patience_s = store_patience_s

    async def run(
        self, key: str, meta: EffectMeta, act: Act, *, sends_at_once: bool = False
    ) -> Settled:
        """Claim, act, store the outcome. ``sends_at_once``: the act's first step is
        ``sent()`` (nothing before it can fail or wait), so a first claim marks the effect
        sent itself and that ``sent()`` costs no statement; later ones check the lease."""
        claim = await self.ledger.claim(key, meta, self.owner, self.lease_s, sends_at_once)
        if isinstance(claim, Finished):
            return Settled(claim.state, claim.result, claim.error, 0, replayed=True)
        if isinstance(claim, Busy):
            raise ClaimBusy(f"effect {key} is held by {claim.owner}")
        assert isinstance(claim, Acquired)

        on_record = claim.marked_sent

        async def sent() -> None:
            nonlocal on_record
            if on_record:  # the claim marked it a moment ago, under a fresh lease
                on_record = False
                return
            if not await self.ledger.mark_sent(key, claim.token):
                raise LeaseLost(f"effect {key}: fenced before sending (token {claim.token})")

        heartbeat = asyncio.create_task(self._heartbeat(key, claim.token))
        try:
            outcome = await act(claim, sent)
        except Retriable:
            # Nothing final happened; give the lease back so a retry need not wait for it.
            # A retry after an unknown outcome still sees previous_sent and reconciles.
            await self.ledger.release(key, claim.token)
            raise
        finally:
            heartbeat.cancel()
            try:
                await heartbeat
            except asyncio.CancelledError:
                pass
            except Exception:  # never over the act's own result: store it regardless
                log.exception("effect %s: the lease heartbeat failed", key)
        stored = await self._complete(key, claim.token, outcome)
        if stored:
            return Settled(outcome.state, outcome.result, outcome.error, claim.attempt, False)
        # Fenced at the end: someone else finished it. Theirs is the outcome of record.
        record = await self.ledger.get(key)
        if record is None or not record.state.final:
            raise LeaseLost(f"effect {key}: lost the lease and no outcome is stored yet")
        return Settled(record.state, record.result, record.error, record.attempts, True)

    async def _complete(self, key: str, token: int, outcome: Outcome) -> bool:
        """Store the outcome of an act that happened. The act cannot be undone, so a ledger
        that is down for a while (a PostgreSQL restart) is waited out, up to
        ``store_patience_s``: giving up sooner would leave a finished act looking unknown.
        Repeating ``complete`` is safe; a take-over in between fences it (False)."""
        deadline = time.monotonic() + self.store_patience_s
        pause = 0.05
        while True:
            try:
                return await self.ledger.complete(
                    key, token, outcome.state, outcome.result, outcome.error
                )
            except Retriable as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("effect %s: storing its outcome failed (%s); again", key, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _heartbeat(self, key: str, token: int) -> None:
        """Renew the lease while the act runs. A renewal that fails (the ledger unreachable)
        is only logged: the act goes on, and the fencing at `complete` decides whose outcome
        stands. An error here must never replace the act's own result."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                # Shielded: the heartbeat is cancelled when the act ends, and a statement
                # cut off mid-flight costs the connection a server-side cancel.
                renewed = await asyncio.shield(self.ledger.renew(key, token, self.lease_s))
            except Retriable as exc:
                log.warning("effect %s: lease renewal failed (%s); will try again", key, exc)
                continue
            if not renewed:
                log.warning("effect %s: lease lost while acting (token %d)", key, token)
                return

"""The effect ledger port. Adapters: `memory.InMemoryLedger`, `postgres.PostgresLedger` and, on
the event loop, `postgres.AsyncPostgresLedger`. One contract suite tests all three.

How an executor uses it (G1: at most one write per effect key reaches the outside world)::

    claim = ledger.claim(key, meta, owner, lease_s)
    Finished -> return claim's stored outcome; do not call the tool
    Busy     -> someone else is on it; retry after claim.retry_after_s
    Acquired -> if claim.previous_sent: reconcile (same idempotency key / lookup / UNKNOWN)
                if not ledger.mark_sent(key, claim.token): stop, we were fenced
                call the tool with X-Fencing-Token = claim.token
                ledger.complete(key, claim.token, state, result, error)

Every operation is safe to repeat after a `LedgerUnavailable` (a Retriable error whose outcome
is unknown): claim answers Busy for our own lost claim until its lease lapses, mark_sent and
renew are idempotent, and complete returns True again for the same outcome.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Protocol

from runcoord.effects.ledger.model import JSON, Claim, EffectMeta, EffectRecord, EffectState


class Ledger(Protocol):
    def claim(
        self, key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool = False
    ) -> Claim:
        """Take the effect, or say why not.

        - no row: insert it (token 1, attempt 1) -> Acquired(previous_sent=False). With
          ``sending`` (the caller sends at once: nothing it does between can fail or wait),
          the row is inserted marked sent -> Acquired(marked_sent=True), one statement
          instead of two. A take-over is never marked here: its previous_sent is read first.
        - final row: -> Finished with the stored outcome.
        - claimed, lease live: -> Busy, whoever the owner is. A claim is never re-entrant: two
          deliveries of one intent inside one process must not both act, so `owner` must be
          unique per worker incarnation and a lost claim reply costs one lease period.
        - claimed, lease lapsed: take over with a compare-and-set that bumps the token; of
          concurrent take-overs exactly one wins, the others see Busy.
          previous_sent = some earlier attempt marked sent (sent_at is never cleared).

        Raises RequestConflict when the row's request_hash differs from meta.request_hash.
        """
        ...

    def mark_sent(self, key: str, token: int) -> bool:
        """Record that the holder is about to call the outside world.

        True only if `token` is current, the effect is not final and the lease is live; a
        holder whose lease lapsed must `renew` first. False means: do not call the tool.
        """
        ...

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        """Extend the lease to now + lease_s. True while `token` is current and not final, even
        if the lease had lapsed (nobody took over, so the effect is still ours)."""
        ...

    def release(self, key: str, token: int) -> bool:
        """Give the lease up early (e.g. the tool answered 5xx before acting) so the next claim
        need not wait for it to lapse. The next claimant takes over with token + 1."""
        ...

    def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        """Store the final outcome, fenced by `token`.

        True if stored now, or if this very outcome was already stored with this token (a
        repeated call after a lost reply). False if the token is stale or another outcome is
        stored: the stored outcome wins; read it with `get`. `state` must be final.
        """
        ...

    def get(self, key: str) -> EffectRecord | None: ...

    def reclaim(self, replica: str, incarnation: str) -> list[str]:
        """Lapse the live leases held by earlier incarnations of a replica that restarted.

        Owners are named ``<replica>/<incarnation details>``; a replica's name is unique among
        the live executors of its store (as a static consumer-group member's id is), so when
        it starts again its earlier incarnations are dead, and waiting out their leases would
        only hold their effects back. After this, the next claim takes each over at once,
        with the usual fencing and `previous_sent` (a zombie's mark_sent is refused, as after
        any lapse). Leases of `incarnation` itself are kept. Returns the keys lapsed.
        """
        ...


class AsyncLedger(Protocol):
    """The same operations as :class:`Ledger`, as coroutines: what the executors' guard uses."""

    async def claim(
        self, key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool = False
    ) -> Claim: ...

    async def mark_sent(self, key: str, token: int) -> bool: ...

    async def renew(self, key: str, token: int, lease_s: float) -> bool: ...

    async def release(self, key: str, token: int) -> bool: ...

    async def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool: ...

    async def get(self, key: str) -> EffectRecord | None: ...


class OnThreads:
    """A blocking :class:`Ledger` as an :class:`AsyncLedger`: each call in a worker thread, so
    the event loop never waits on it."""

    def __init__(self, ledger: Ledger) -> None:
        self.inner = ledger

    async def claim(
        self, key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool = False
    ) -> Claim:
        return await asyncio.to_thread(self.inner.claim, key, meta, owner, lease_s, sending)

    async def mark_sent(self, key: str, token: int) -> bool:
        return await asyncio.to_thread(self.inner.mark_sent, key, token)

    async def renew(self, key: str, token: int, lease_s: float) -> bool:
        return await asyncio.to_thread(self.inner.renew, key, token, lease_s)

    async def release(self, key: str, token: int) -> bool:
        return await asyncio.to_thread(self.inner.release, key, token)

    async def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        return await asyncio.to_thread(self.inner.complete, key, token, state, result, error)

    async def get(self, key: str) -> EffectRecord | None:
        return await asyncio.to_thread(self.inner.get, key)


def on_loop(ledger: Ledger | AsyncLedger) -> AsyncLedger:
    """The ledger as coroutines: an AsyncLedger as it is, a blocking one on threads."""
    if inspect.iscoroutinefunction(ledger.claim):
        return ledger  # type: ignore[return-value]
    return OnThreads(ledger)  # type: ignore[arg-type]


def check_final(state: EffectState) -> None:
    if not state.final:
        raise ValueError(f"complete() needs a final state, not {state}")


def check_lease(lease_s: float) -> None:
    if not lease_s > 0:
        raise ValueError(f"a lease must be longer than 0 s, not {lease_s}")

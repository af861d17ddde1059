"""Redis fast path in front of any Ledger: a read-through cache of final outcomes and a lease
hint that answers Busy without a database round trip (duplicate deliveries during a rebalance
storm all ask about keys that are in flight or done).

Safe by construction, whatever Redis does:
- only final outcomes are cached, and a final row never changes (a trigger enforces it);
- a lease hint is written only after the store granted the lease and lives no longer than it,
  so a stale or lost hint can only delay a take-over or send a claim to the store, never let a
  second claimant act;
- every write (mark_sent, renew, release, complete) goes to the store first and decides there;
- any Redis error falls back to the store (RedisGuard).
`get` always reads the store: it is for forensics, where the whole row matters.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from runcoord.effects.ledger.errors import RequestConflict
from runcoord.effects.ledger.model import (
    JSON,
    Acquired,
    Busy,
    Claim,
    EffectMeta,
    EffectRecord,
    EffectState,
    Finished,
)
from runcoord.effects.ledger.port import Ledger, check_lease
from runcoord.effects.ledger.redis_guard import RedisGuard


class CachedLedger:
    def __init__(
        self,
        inner: Ledger,
        guard: RedisGuard,
        *,
        prefix: str = "runcoord:ledger:",
        final_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        self.inner = inner
        self._guard = guard
        self._prefix = prefix
        self._final_ttl_s = final_ttl_s

    def final_key(self, key: str) -> str:
        return f"{self._prefix}final:{key}"

    def lease_key(self, key: str) -> str:
        return f"{self._prefix}lease:{key}"

    def claim(self, key: str, meta: EffectMeta, owner: str, lease_s: float) -> Claim:
        check_lease(lease_s)
        fast = self._fast_claim(key, meta)
        if fast is not None:
            return fast
        claim = self.inner.claim(key, meta, owner, lease_s)
        if isinstance(claim, Acquired):
            hint = json.dumps({"owner": owner, "request_hash": meta.request_hash})
            ms = max(1, int(lease_s * 1000))
            self._guard.call(lambda r: r.set(self.lease_key(key), hint, px=ms), None)
        elif isinstance(claim, Finished):
            self._remember(claim, meta.request_hash)
        return claim

    def mark_sent(self, key: str, token: int) -> bool:
        return self.inner.mark_sent(key, token)

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        renewed = self.inner.renew(key, token, lease_s)
        if renewed:  # we hold the current token, so a hint present is ours
            ms = max(1, int(lease_s * 1000))
            self._guard.call(lambda r: r.pexpire(self.lease_key(key), ms), None)
        return renewed

    def release(self, key: str, token: int) -> bool:
        released = self.inner.release(key, token)
        if released:
            self._guard.call(lambda r: r.delete(self.lease_key(key)), None)
        return released

    def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        done = self.inner.complete(key, token, state, result, error)
        if done:  # the outcome is cached by the next read that finds it (read-through)
            self._guard.call(lambda r: r.delete(self.lease_key(key)), None)
        return done

    def reclaim(self, replica: str, incarnation: str) -> list[str]:
        lapsed = self.inner.reclaim(replica, incarnation)

        # Their hints would still answer Busy for the dead holders, and so would a hint the
        # dead one left behind when it died between the store and Redis (after a release or
        # a complete): drop every hint of an earlier incarnation.
        def drop(r: redis.Redis) -> None:
            stale = [self.lease_key(k) for k in lapsed]
            for hint_key in r.scan_iter(match=self.lease_key("*"), count=1000):
                raw = r.get(hint_key)
                owner = (_load(raw if isinstance(raw, str) else None) or {}).get("owner")
                mine = isinstance(owner, str) and owner.startswith(f"{replica}/")
                if mine and owner != incarnation:
                    stale.append(hint_key)
            if stale:
                r.delete(*stale)

        self._guard.call(drop, None)
        return lapsed

    def get(self, key: str) -> EffectRecord | None:
        record = self.inner.get(key)
        if record is not None and record.state.final:
            self._remember(record.finished(), record.meta.request_hash)
        return record

    def _fast_claim(self, key: str, meta: EffectMeta) -> Claim | None:
        def read(r: redis.Redis) -> tuple[str | None, str | None, int]:
            pipe = r.pipeline(transaction=False)
            pipe.get(self.final_key(key))
            pipe.get(self.lease_key(key))
            pipe.pttl(self.lease_key(key))
            final, lease, ttl_ms = pipe.execute()
            return final, lease, ttl_ms

        nothing: tuple[str | None, str | None, int] = (None, None, -2)
        final, lease, ttl_ms = self._guard.call(read, nothing)
        entry = _load(final)
        if entry is not None:
            _check(key, entry.get("request_hash"), meta)
            try:
                return Finished(
                    key=key,
                    state=EffectState(entry["state"]),
                    result=entry.get("result"),
                    error=entry.get("error"),
                )
            except (KeyError, ValueError):
                pass  # not ours or damaged: ask the store
        hint = _load(lease)
        if hint is not None and ttl_ms > 0 and isinstance(hint.get("owner"), str):
            _check(key, hint.get("request_hash"), meta)
            return Busy(key=key, owner=hint["owner"], retry_after_s=ttl_ms / 1000)
        return None

    def _remember(self, finished: Finished, request_hash: str) -> None:
        if not finished.state.final:
            return
        entry = json.dumps(
            {
                "state": finished.state.value,
                "result": finished.result,
                "error": finished.error,
                "request_hash": request_hash,
            }
        )
        self._guard.call(
            lambda r: r.set(self.final_key(finished.key), entry, ex=self._final_ttl_s), None
        )


def _load(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check(key: str, stored_hash: object, meta: EffectMeta) -> None:
    if isinstance(stored_hash, str) and stored_hash != meta.request_hash:
        raise RequestConflict(key, stored_hash, meta.request_hash)

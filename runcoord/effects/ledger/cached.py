"""Redis in front of any Ledger: a read-through cache of FINAL outcomes, nothing else.

A claim costs one Redis command (GET of the final key) before it goes to the store. When the
store answers Finished, the claim was a duplicate delivery of a done effect, and the outcome
is cached (SET with a TTL) so the next duplicate is answered without the store. A first
delivery, the common case, never writes to Redis.

Safe by construction, whatever Redis does:
- only final outcomes are cached, and a final row never changes (a trigger enforces it);
- every other answer (Acquired, Busy) and every write (mark_sent, renew, release, complete,
  reclaim) comes from the store and is decided there;
- request hashes are checked on cached answers too;
- any Redis error falls back to the store (RedisGuard).

There used to be a lease hint as well (a Redis key written after the store granted a lease,
renewed and deleted with it) so that a duplicate of an effect in flight got Busy without a
database round trip. It cost 4 Redis commands on every first delivery (read, set, renew,
delete) to save one PostgreSQL round trip on rare duplicates, and the store answers Busy for
an effect in flight anyway, so it is gone.

`get` always reads the store and caches nothing: it is for forensics, where the whole row
matters.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from runcoord.effects.ledger.errors import RequestConflict
from runcoord.effects.ledger.model import (
    JSON,
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

    def claim(self, key: str, meta: EffectMeta, owner: str, lease_s: float) -> Claim:
        check_lease(lease_s)
        cached = self._cached_final(key, meta)
        if cached is not None:
            return cached
        claim = self.inner.claim(key, meta, owner, lease_s)
        if isinstance(claim, Finished):  # a duplicate of a done effect: remember its outcome
            self._remember(claim, meta.request_hash)
        return claim

    def mark_sent(self, key: str, token: int) -> bool:
        return self.inner.mark_sent(key, token)

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        return self.inner.renew(key, token, lease_s)

    def release(self, key: str, token: int) -> bool:
        return self.inner.release(key, token)

    def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        # Not cached here: most effects are never delivered twice, and the first duplicate
        # caches the outcome it reads from the store.
        return self.inner.complete(key, token, state, result, error)

    def reclaim(self, replica: str, incarnation: str) -> list[str]:
        return self.inner.reclaim(replica, incarnation)

    def get(self, key: str) -> EffectRecord | None:
        return self.inner.get(key)

    def _cached_final(self, key: str, meta: EffectMeta) -> Finished | None:
        def read(r: redis.Redis) -> str | None:
            raw = r.get(self.final_key(key))
            return raw if isinstance(raw, str) else None

        entry = _load(self._guard.call(read, None))
        if entry is None:
            return None
        _check(key, entry.get("request_hash"), meta)
        try:
            state = EffectState(entry["state"])
        except (KeyError, ValueError):
            return None  # not ours or damaged: ask the store
        if not state.final:
            return None
        error = entry.get("error")
        return Finished(
            key=key,
            state=state,
            result=entry.get("result"),
            error=error if isinstance(error, str) else None,
        )

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

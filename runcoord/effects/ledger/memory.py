"""In-memory ledger for unit tests of the executors. Same semantics as the Postgres adapter
(the contract suite runs against both); one lock stands in for PostgreSQL's row locks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from runcoord.effects.ledger.errors import RequestConflict
from runcoord.effects.ledger.jsonvalue import normalize
from runcoord.effects.ledger.model import (
    JSON,
    Acquired,
    Busy,
    Claim,
    EffectMeta,
    EffectRecord,
    EffectState,
)
from runcoord.effects.ledger.port import check_final, check_lease


@dataclass(frozen=True)
class _Row:
    meta: EffectMeta
    state: EffectState
    token: int
    attempts: int
    owner: str
    lease_until: float
    sent_at: float | None
    completed_at: float | None
    result: JSON
    error: str | None


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


class InMemoryLedger:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # Wall-clock seconds, like PostgreSQL's now(); inject a fake clock to move time in tests.
        self._clock = clock
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    def claim(
        self, key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool = False
    ) -> Claim:
        check_lease(lease_s)
        with self._lock:
            now = self._clock()
            row = self._rows.get(key)
            if row is None:
                self._rows[key] = _Row(
                    meta=meta,
                    state=EffectState.CLAIMED,
                    token=1,
                    attempts=1,
                    owner=owner,
                    lease_until=now + lease_s,
                    sent_at=now if sending else None,
                    completed_at=None,
                    result=None,
                    error=None,
                )
                return Acquired(
                    key=key, token=1, attempt=1, previous_sent=False, marked_sent=sending
                )
            if row.meta.request_hash != meta.request_hash:
                raise RequestConflict(key, row.meta.request_hash, meta.request_hash)
            if row.state.final:
                return self._record(key, row).finished()
            if row.lease_until > now:
                return Busy(key=key, owner=row.owner, retry_after_s=row.lease_until - now)
            taken = replace(
                row,
                token=row.token + 1,
                attempts=row.attempts + 1,
                owner=owner,
                lease_until=now + lease_s,
            )
            self._rows[key] = taken
            return Acquired(
                key=key,
                token=taken.token,
                attempt=taken.attempts,
                previous_sent=row.sent_at is not None,
            )

    def mark_sent(self, key: str, token: int) -> bool:
        with self._lock:
            now = self._clock()
            row = self._held(key, token)
            if row is None or row.lease_until <= now:
                return False
            self._rows[key] = replace(row, sent_at=now)
            return True

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        check_lease(lease_s)
        with self._lock:
            row = self._held(key, token)
            if row is None:
                return False
            self._rows[key] = replace(row, lease_until=self._clock() + lease_s)
            return True

    def release(self, key: str, token: int) -> bool:
        with self._lock:
            row = self._held(key, token)
            if row is None:
                return False
            self._rows[key] = replace(row, lease_until=min(row.lease_until, self._clock()))
            return True

    def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        check_final(state)
        # Stored as jsonb would store it, and copied, so no caller can change it afterwards.
        result = normalize(result)
        with self._lock:
            row = self._rows.get(key)
            if row is None or row.token != token:
                return False
            if row.state.final:
                return (row.state, row.result, row.error) == (state, result, error)
            self._rows[key] = replace(
                row,
                state=state,
                result=result,
                error=error,
                completed_at=self._clock(),
            )
            return True

    def get(self, key: str) -> EffectRecord | None:
        with self._lock:
            row = self._rows.get(key)
            return None if row is None else self._record(key, row)

    def reclaim(self, replica: str, incarnation: str) -> list[str]:
        with self._lock:
            now = self._clock()
            lapsed = [
                key
                for key, row in self._rows.items()
                if not row.state.final
                and row.lease_until > now
                and row.owner.startswith(f"{replica}/")
                and row.owner != incarnation
            ]
            for key in lapsed:
                self._rows[key] = replace(self._rows[key], lease_until=now)
            return lapsed

    def expire_lease(self, key: str) -> None:
        """Test hook: make the key's lease lapse now, as if its holder had stalled."""
        with self._lock:
            row = self._rows.get(key)
            if row is not None and not row.state.final:
                self._rows[key] = replace(row, lease_until=self._clock())

    def _held(self, key: str, token: int) -> _Row | None:
        row = self._rows.get(key)
        if row is None or row.token != token or row.state.final:
            return None
        return row

    @staticmethod
    def _record(key: str, row: _Row) -> EffectRecord:
        return EffectRecord(
            key=key,
            meta=row.meta,
            state=row.state,
            fencing_token=row.token,
            attempts=row.attempts,
            lease_owner=row.owner,
            lease_expires_at=None if row.state.final else _ts(row.lease_until),
            sent_at=_ts(row.sent_at),
            completed_at=_ts(row.completed_at),
            result=normalize(row.result),
            error=row.error,
        )

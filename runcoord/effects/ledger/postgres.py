"""PostgreSQL ledger (psycopg 3). The source of truth for G1; Redis only ever speeds it up.

One connection per adapter instance (one per executor worker), autocommit, so each statement is
its own transaction and PostgreSQL's clock (`now()`) is the only clock leases are judged by.
A dropped connection (PostgreSQL restart, failover, terminated backend) surfaces as
`LedgerUnavailable` (Retriable) and the next call reconnects; no call retries on its own, so
each retry decision stays with the executor's loop.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from runcoord.effects.ledger.errors import LedgerMisconfigured, LedgerUnavailable, RequestConflict
from runcoord.effects.ledger.jsonvalue import normalize
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
from runcoord.effects.ledger.port import check_final, check_lease

T = TypeVar("T")
Conn = psycopg.Connection[DictRow]

_COLUMNS = """effect_key, kind, tenant, run_id, step_id, tool_call_id, request_hash, state,
    fencing_token, attempts, lease_owner, lease_expires_at, sent_at, completed_at, result, error,
    lease_expires_at > now() AS lease_live,
    greatest(0, extract(epoch FROM lease_expires_at - now()))::float8 AS lease_left_s"""

_INSERT = """
INSERT INTO effect_ledger (effect_key, kind, tenant, run_id, step_id, tool_call_id, request_hash,
                           lease_owner, lease_expires_at)
VALUES (%(key)s, %(kind)s, %(tenant)s, %(run_id)s, %(step_id)s, %(tool_call_id)s,
        %(request_hash)s, %(owner)s, now() + make_interval(secs => %(lease_s)s))
ON CONFLICT (effect_key) DO NOTHING
RETURNING fencing_token, attempts
"""

_SELECT = f"SELECT {_COLUMNS} FROM effect_ledger WHERE effect_key = %(key)s"

# Compare-and-set on the token we saw: of concurrent take-overs, the first to lock the row
# bumps the token and the others re-check the WHERE against the new row and match nothing.
# sent_at is read from the row as locked, so a mark_sent that slipped in first is not missed.
_TAKE_OVER = """
UPDATE effect_ledger
SET fencing_token = fencing_token + 1, attempts = attempts + 1,
    lease_owner = %(owner)s, lease_expires_at = now() + make_interval(secs => %(lease_s)s),
    claimed_at = now(), updated_at = now()
WHERE effect_key = %(key)s AND state = 'claimed' AND fencing_token = %(seen)s
  AND lease_expires_at <= now()
RETURNING fencing_token, attempts, sent_at IS NOT NULL AS previous_sent
"""

_MARK_SENT = """
UPDATE effect_ledger SET sent_at = now(), updated_at = now()
WHERE effect_key = %(key)s AND fencing_token = %(token)s AND state = 'claimed'
  AND lease_expires_at > now()
"""

_RENEW = """
UPDATE effect_ledger
SET lease_expires_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
WHERE effect_key = %(key)s AND fencing_token = %(token)s AND state = 'claimed'
"""

_RELEASE = """
UPDATE effect_ledger SET lease_expires_at = least(lease_expires_at, now()), updated_at = now()
WHERE effect_key = %(key)s AND fencing_token = %(token)s AND state = 'claimed'
"""

_COMPLETE = """
UPDATE effect_ledger
SET state = %(state)s, result = %(result)s, error = %(error)s,
    lease_expires_at = NULL, completed_at = now(), updated_at = now()
WHERE effect_key = %(key)s AND fencing_token = %(token)s AND state = 'claimed'
"""

# The predecessors of a restarted replica: their live leases lapse now (see Ledger.reclaim).
_RECLAIM = """
UPDATE effect_ledger SET lease_expires_at = now(), updated_at = now()
WHERE state = 'claimed' AND lease_expires_at > now()
  AND starts_with(lease_owner, %(prefix)s) AND lease_owner <> %(incarnation)s
RETURNING effect_key
"""

_OUTCOME = (
    "SELECT fencing_token, state, result, error FROM effect_ledger WHERE effect_key = %(key)s"
)

# A claim loops only when another claimant changed the row between our statements; each turn
# is somebody else's progress, so a small bound is plenty.
_CLAIM_ROUNDS = 8


class PostgresLedger:
    def __init__(
        self,
        dsn: str,
        *,
        application_name: str = "runcoord-ledger",
        connect_timeout_s: int = 5,
        statement_timeout_ms: int = 5000,
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._conn: Conn | None = None
        # psycopg serialises a connection's use anyway; the lock also guards (re)connecting.
        self._lock = threading.Lock()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def claim(self, key: str, meta: EffectMeta, owner: str, lease_s: float) -> Claim:
        check_lease(lease_s)
        params: dict[str, Any] = {
            "key": key,
            "kind": meta.kind,
            "tenant": meta.tenant,
            "run_id": meta.run_id,
            "step_id": meta.step_id,
            "tool_call_id": meta.tool_call_id,
            "request_hash": meta.request_hash,
            "owner": owner,
            "lease_s": lease_s,
        }

        def run(conn: Conn) -> Claim:
            for _ in range(_CLAIM_ROUNDS):
                inserted = conn.execute(_INSERT, params).fetchone()
                if inserted is not None:
                    return Acquired(key=key, token=1, attempt=1, previous_sent=False)
                row = conn.execute(_SELECT, params).fetchone()
                if row is None:  # deleted between our two statements (retention): insert again
                    continue
                if row["request_hash"] != meta.request_hash:
                    raise RequestConflict(key, row["request_hash"], meta.request_hash)
                state = EffectState(row["state"])
                if state.final:
                    return Finished(key=key, state=state, result=row["result"], error=row["error"])
                if row["lease_live"]:
                    return Busy(
                        key=key, owner=row["lease_owner"], retry_after_s=row["lease_left_s"]
                    )
                taken = conn.execute(
                    _TAKE_OVER, {**params, "seen": row["fencing_token"]}
                ).fetchone()
                if taken is not None:
                    return Acquired(
                        key=key,
                        token=taken["fencing_token"],
                        attempt=taken["attempts"],
                        previous_sent=taken["previous_sent"],
                    )
            raise LedgerUnavailable(f"claim of {key!r} kept racing with other claimants")

        return self._run(run)

    def mark_sent(self, key: str, token: int) -> bool:
        return self._update(_MARK_SENT, {"key": key, "token": token})

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        check_lease(lease_s)
        return self._update(_RENEW, {"key": key, "token": token, "lease_s": lease_s})

    def release(self, key: str, token: int) -> bool:
        return self._update(_RELEASE, {"key": key, "token": token})

    def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        check_final(state)
        result = normalize(result)
        params = {
            "key": key,
            "token": token,
            "state": state.value,
            "result": None if result is None else Jsonb(result),
            "error": error,
        }

        def run(conn: Conn) -> bool:
            if conn.execute(_COMPLETE, params).rowcount == 1:
                return True
            # Not stored now. If it is stored already with this token and this outcome, our
            # earlier call committed and its reply was lost: report success again.
            row = conn.execute(_OUTCOME, params).fetchone()
            return row is not None and (
                row["fencing_token"],
                row["state"],
                row["result"],
                row["error"],
            ) == (token, state.value, result, error)

        return self._run(run)

    def get(self, key: str) -> EffectRecord | None:
        def run(conn: Conn) -> EffectRecord | None:
            row = conn.execute(_SELECT, {"key": key}).fetchone()
            return None if row is None else _record(row)

        return self._run(run)

    def reclaim(self, replica: str, incarnation: str) -> list[str]:
        params = {"prefix": f"{replica}/", "incarnation": incarnation}
        return self._run(
            lambda conn: [row["effect_key"] for row in conn.execute(_RECLAIM, params).fetchall()]
        )

    def _update(self, sql: str, params: dict[str, Any]) -> bool:
        return self._run(lambda conn: conn.execute(sql, params).rowcount == 1)

    def _run(self, fn: Callable[[Conn], T]) -> T:
        """Run `fn` on the connection, translating driver errors at this one boundary."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                return fn(self._conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # Connection-level trouble (restart, network, terminated backend, deadlock or
                # serialization failure): drop the connection; the next call reconnects.
                self._discard()
                raise LedgerUnavailable(f"effect ledger unavailable: {exc}") from exc
            except (pg_errors.UndefinedTable, pg_errors.InsufficientPrivilege) as exc:
                raise LedgerMisconfigured(
                    f"effect ledger unusable ({exc}); has `runcoord db migrate` run?"
                ) from exc
            except psycopg.Error as exc:
                raise LedgerMisconfigured(f"effect ledger query failed: {exc}") from exc

    def _connect(self) -> Conn:
        conn = psycopg.connect(
            self._dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=self._connect_timeout_s,
            application_name=self._application_name,
            # A peer that vanished without a reset (partition, dead host) is noticed in
            # about 20 s instead of hanging the executor on a read forever.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=3,
            keepalives_count=3,
        )
        # Every ledger statement touches one row; one that waits this long is stuck on a
        # lock or a sick server. Cancelled, it surfaces as LedgerUnavailable (Retriable).
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            (str(self._statement_timeout_ms),),
        )
        return conn

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # broken already: nothing left to save
                self._conn.close()
            self._conn = None


def _record(row: DictRow) -> EffectRecord:
    return EffectRecord(
        key=row["effect_key"],
        meta=EffectMeta(
            kind=row["kind"],
            tenant=row["tenant"],
            run_id=row["run_id"],
            step_id=row["step_id"],
            tool_call_id=row["tool_call_id"],
            request_hash=row["request_hash"],
        ),
        state=EffectState(row["state"]),
        fencing_token=row["fencing_token"],
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        sent_at=row["sent_at"],
        completed_at=row["completed_at"],
        result=row["result"],
        error=row["error"],
    )

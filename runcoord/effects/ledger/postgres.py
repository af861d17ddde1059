"""PostgreSQL ledger (psycopg 3): the source of truth for G1.

Two adapters run the same statement plans: `PostgresLedger` on a blocking connection (threads,
command-line tools, tests) and `AsyncPostgresLedger` on the event loop (the executors). One
connection per adapter instance (one per executor), autocommit, so each statement is
its own transaction and PostgreSQL's clock (`now()`) is the only clock leases are judged by.
A dropped connection (PostgreSQL restart, failover, terminated backend) surfaces as
`LedgerUnavailable` (Retriable) and the next call reconnects; no call retries on its own, so
each retry decision stays with the executor's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from runcoord.effects.ledger.errors import (
    LedgerError,
    LedgerMisconfigured,
    LedgerUnavailable,
    RequestConflict,
)
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
AsyncConn = psycopg.AsyncConnection[DictRow]

_COLUMNS = """effect_key, kind, tenant, run_id, step_id, tool_call_id, request_hash, state,
    fencing_token, attempts, lease_owner, lease_expires_at, sent_at, completed_at, result, error,
    lease_expires_at > now() AS lease_live,
    greatest(0, extract(epoch FROM lease_expires_at - now()))::float8 AS lease_left_s"""

_INSERT = """
INSERT INTO effect_ledger (effect_key, kind, tenant, run_id, step_id, tool_call_id, request_hash,
                           lease_owner, lease_expires_at, sent_at)
VALUES (%(key)s, %(kind)s, %(tenant)s, %(run_id)s, %(step_id)s, %(tool_call_id)s,
        %(request_hash)s, %(owner)s, now() + make_interval(secs => %(lease_s)s),
        CASE WHEN %(sending)s THEN now() END)
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


class Statement(NamedTuple):
    """One statement of a plan, and what of its answer the plan needs back."""

    sql: str
    params: dict[str, Any]
    want: Literal["row", "rows", "count"]


# A ledger operation as a plan: it yields the statements to run, one at a time, and gets back
# each one's answer (the first row or None, every row, or the rowcount). Both connections below
# run the same plans, so the claim loop and the check after a lost reply exist once.
Plan = Generator[Statement, Any, T]


def _claim(key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool) -> Plan[Claim]:
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
        "sending": sending,
    }
    for _ in range(_CLAIM_ROUNDS):
        inserted = yield Statement(_INSERT, params, "row")
        if inserted is not None:
            return Acquired(key=key, token=1, attempt=1, previous_sent=False, marked_sent=sending)
        row = yield Statement(_SELECT, params, "row")
        if row is None:  # deleted between our two statements (retention): insert again
            continue
        if row["request_hash"] != meta.request_hash:
            raise RequestConflict(key, row["request_hash"], meta.request_hash)
        state = EffectState(row["state"])
        if state.final:
            return Finished(key=key, state=state, result=row["result"], error=row["error"])
        if row["lease_live"]:
            return Busy(key=key, owner=row["lease_owner"], retry_after_s=row["lease_left_s"])
        taken = yield Statement(_TAKE_OVER, {**params, "seen": row["fencing_token"]}, "row")
        if taken is not None:
            return Acquired(
                key=key,
                token=taken["fencing_token"],
                attempt=taken["attempts"],
                previous_sent=taken["previous_sent"],
            )
    raise LedgerUnavailable(f"claim of {key!r} kept racing with other claimants")


def _complete(
    key: str, token: int, state: EffectState, result: JSON, error: str | None
) -> Plan[bool]:
    check_final(state)
    result = normalize(result)
    params = {
        "key": key,
        "token": token,
        "state": state.value,
        "result": None if result is None else Jsonb(result),
        "error": error,
    }
    if (yield Statement(_COMPLETE, params, "count")) == 1:
        return True
    # Not stored now. If it is stored already with this token and this outcome, our earlier
    # call committed and its reply was lost: report success again.
    row = yield Statement(_OUTCOME, params, "row")
    return row is not None and (
        row["fencing_token"],
        row["state"],
        row["result"],
        row["error"],
    ) == (token, state.value, result, error)


def _updated(sql: str, params: dict[str, Any]) -> Plan[bool]:
    count: int = yield Statement(sql, params, "count")
    return count == 1


def _mark_sent(key: str, token: int) -> Plan[bool]:
    return _updated(_MARK_SENT, {"key": key, "token": token})


def _renew(key: str, token: int, lease_s: float) -> Plan[bool]:
    check_lease(lease_s)
    return _updated(_RENEW, {"key": key, "token": token, "lease_s": lease_s})


def _release(key: str, token: int) -> Plan[bool]:
    return _updated(_RELEASE, {"key": key, "token": token})


def _get(key: str) -> Plan[EffectRecord | None]:
    row = yield Statement(_SELECT, {"key": key}, "row")
    return None if row is None else _record(row)


def _reclaim(replica: str, incarnation: str) -> Plan[list[str]]:
    params = {"prefix": f"{replica}/", "incarnation": incarnation}
    rows = yield Statement(_RECLAIM, params, "rows")
    return [row["effect_key"] for row in rows]


@dataclass(frozen=True, slots=True)
class _Settings:
    """How both ledgers connect."""

    dsn: str
    application_name: str
    connect_timeout_s: int
    statement_timeout_ms: int

    def connect_args(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": self.connect_timeout_s,
            "application_name": self.application_name,
            # A peer that vanished without a reset (partition, dead host) is noticed in
            # about 20 s instead of hanging the executor on a read forever.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 3,
            "keepalives_count": 3,
        }

    def timeout_statement(self) -> Statement:
        # Every ledger statement touches one row; one that waits this long is stuck on a lock
        # or a sick server. Cancelled, it surfaces as LedgerUnavailable (Retriable).
        return Statement(
            "SELECT set_config('statement_timeout', %(ms)s, false)",
            {"ms": str(self.statement_timeout_ms)},
            "row",
        )


def _translated(exc: psycopg.Error) -> tuple[LedgerError, bool]:
    """The ledger error a driver error stands for, and whether the connection is lost with it."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # Connection-level trouble (restart, network, terminated backend, deadlock or
        # serialization failure): drop the connection; the next call reconnects.
        return LedgerUnavailable(f"effect ledger unavailable: {exc}"), True
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InsufficientPrivilege):
        return (
            LedgerMisconfigured(f"effect ledger unusable ({exc}); has `runcoord db migrate` run?"),
            False,
        )
    return LedgerMisconfigured(f"effect ledger query failed: {exc}"), False


class PostgresLedger:
    """The ledger on a blocking connection: for threads and command-line tools."""

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str = "runcoord-ledger",
        connect_timeout_s: int = 5,
        statement_timeout_ms: int = 5000,
    ) -> None:
        self._settings = _Settings(dsn, application_name, connect_timeout_s, statement_timeout_ms)
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

    def claim(
        self, key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool = False
    ) -> Claim:
        return self._run(_claim(key, meta, owner, lease_s, sending))

    def mark_sent(self, key: str, token: int) -> bool:
        return self._run(_mark_sent(key, token))

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        return self._run(_renew(key, token, lease_s))

    def release(self, key: str, token: int) -> bool:
        return self._run(_release(key, token))

    def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        return self._run(_complete(key, token, state, result, error))

    def get(self, key: str) -> EffectRecord | None:
        return self._run(_get(key))

    def reclaim(self, replica: str, incarnation: str) -> list[str]:
        return self._run(_reclaim(replica, incarnation))

    def _run(self, plan: Plan[T]) -> T:
        """Run a plan on the connection, translating driver errors at this one boundary."""
        with self._lock:
            try:
                statement = next(plan)  # argument checks raise here, before connecting
                conn = self._connection()
                while True:
                    statement = plan.send(
                        _answer(conn.execute(statement.sql, statement.params), statement.want)
                    )
            except StopIteration as done:
                return cast(T, done.value)
            except psycopg.Error as exc:
                error, lost = _translated(exc)
                if lost:
                    self._discard()
                raise error from exc

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._settings.dsn, **self._settings.connect_args())
            timeout = self._settings.timeout_statement()
            conn.execute(timeout.sql, timeout.params)
            self._conn = conn
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # broken already: nothing left to save
                self._conn.close()
            self._conn = None


class AsyncPostgresLedger:
    """The ledger on the event loop: the executors' hot path (three statements per effect, two
    for one claimed ``sending``)
    without a thread hop per statement. Same plans, same errors as :class:`PostgresLedger`;
    its methods are coroutines (:class:`runcoord.effects.ledger.port.AsyncLedger`)."""

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str = "runcoord-ledger",
        connect_timeout_s: int = 5,
        statement_timeout_ms: int = 5000,
    ) -> None:
        self._settings = _Settings(dsn, application_name, connect_timeout_s, statement_timeout_ms)
        self._conn: AsyncConn | None = None
        # One statement at a time on the connection; also guards (re)connecting. (An
        # asyncio.Lock binds to the loop that first waits on it, not to one at creation.)
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncPostgresLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def claim(
        self, key: str, meta: EffectMeta, owner: str, lease_s: float, sending: bool = False
    ) -> Claim:
        return await self._run(_claim(key, meta, owner, lease_s, sending))

    async def mark_sent(self, key: str, token: int) -> bool:
        return await self._run(_mark_sent(key, token))

    async def renew(self, key: str, token: int, lease_s: float) -> bool:
        return await self._run(_renew(key, token, lease_s))

    async def release(self, key: str, token: int) -> bool:
        return await self._run(_release(key, token))

    async def complete(
        self,
        key: str,
        token: int,
        state: EffectState,
        result: JSON = None,
        error: str | None = None,
    ) -> bool:
        return await self._run(_complete(key, token, state, result, error))

    async def get(self, key: str) -> EffectRecord | None:
        return await self._run(_get(key))

    async def reclaim(self, replica: str, incarnation: str) -> list[str]:
        return await self._run(_reclaim(replica, incarnation))

    async def _run(self, plan: Plan[T]) -> T:
        async with self._lock:
            try:
                statement = next(plan)
                conn = await self._connection()
                while True:
                    cursor = await conn.execute(statement.sql, statement.params)
                    statement = plan.send(await _answer_async(cursor, statement.want))
            except StopIteration as done:
                return cast(T, done.value)
            except psycopg.Error as exc:
                error, lost = _translated(exc)
                if lost:
                    await self._discard()
                raise error from exc

    async def _connection(self) -> AsyncConn:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._settings.dsn, **self._settings.connect_args()
            )
            timeout = self._settings.timeout_statement()
            await conn.execute(timeout.sql, timeout.params)
            self._conn = conn
        return self._conn

    async def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # broken already: nothing left to save
                await self._conn.close()
            self._conn = None


def _answer(cursor: psycopg.Cursor[DictRow], want: str) -> Any:
    if want == "count":
        return cursor.rowcount
    return cursor.fetchone() if want == "row" else cursor.fetchall()


async def _answer_async(cursor: psycopg.AsyncCursor[DictRow], want: str) -> Any:
    if want == "count":
        return cursor.rowcount
    return await (cursor.fetchone() if want == "row" else cursor.fetchall())


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

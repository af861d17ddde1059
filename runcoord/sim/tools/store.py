"""The gateway's PostgreSQL side: an action is its audit row plus the tool's own state, in one
transaction, committed before the tool answers. So the audit log holds every action a caller
could have caused, including the ones whose answer was late or lost.

The same transaction decides whether the request may act at all (tools.yaml, "Request
deadlines and fencing"): under a lock of its (tenant, Idempotency-Key), it raises the key's
fence to its X-Fencing-Token and is refused if a higher token was already seen; then it is
refused if its X-Request-Deadline has passed by the database's clock. A lookup takes the same
lock (shared), so it never reads between a request's deadline check and its commit: a lookup
made after a request's deadline sees that request's action, or the request never acts."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

AsyncConn = psycopg.AsyncConnection[DictRow]

# Every table the gateway needs (the latest migration's included).
SCHEMA_READY = (
    "SELECT to_regclass('sandbox_actions') IS NOT NULL"
    " AND to_regclass('sandbox_fences') IS NOT NULL AS ok"
)


def payload_hash(body: Any) -> str:
    """sha256 of the body's canonical JSON (sorted keys, no spaces, UTF-8).

    Deliberately not imported from the product: the sandbox stands for the outside world and
    the evaluation must not share the code it judges. Same encoding as effects.ledger's.
    """
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Call:
    tool: str
    tenant: str
    run_id: str | None
    tool_call_id: str | None
    idempotency_key: str | None
    fencing_token: int | None
    payload_hash: str
    dedupe: bool  # the tool honours Idempotency-Key
    record_ref: bool  # the tool records the key as a lookup reference
    deadline_ms: int | None = None  # X-Request-Deadline (unix ms): never acted on afterwards


@dataclass(frozen=True)
class Outcome:
    response: dict[str, Any]
    audit_id: int
    replayed: bool  # a key-honouring tool answered a repeat from its records; no action
    conflict: bool = False  # the key was first used with another payload; no action


@dataclass(frozen=True)
class Refused:
    """The request did not act: ``fenced`` (a higher fencing token, ``seen``, was already seen
    for its key) or ``late`` (its deadline had passed by ``now_ms`` when it came to act)."""

    reason: Literal["fenced", "late"]
    seen: int | None = None
    now_ms: int | None = None


class AsyncPool:
    """A few autocommit connections, opened on demand; one that saw an error is not reused."""

    def __init__(self, dsn: str, size: int = 10) -> None:
        self._dsn = dsn
        self._idle: list[AsyncConn] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    row_factory=dict_row,
                    connect_timeout=5,
                    application_name="runcoord-sim-tools",
                )
            try:
                yield conn
            except BaseException:
                await conn.close()
                raise
            self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


_AUDIT = """
INSERT INTO sandbox_audit (tool, tenant, run_id, tool_call_id, payload_hash, idempotency_key,
                           fencing_token)
VALUES (%(tool)s, %(tenant)s, %(run_id)s, %(tool_call_id)s, %(payload_hash)s,
        %(idempotency_key)s, %(fencing_token)s)
RETURNING id
"""

_ACTION = """
INSERT INTO sandbox_actions (audit_id, tool, tenant, idempotency_key, ref, payload_hash, response)
VALUES (%(audit_id)s, %(tool)s, %(tenant)s, %(dedupe_key)s, %(ref)s, %(payload_hash)s,
        %(response)s)
ON CONFLICT (tool, tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING audit_id
"""

# One request (or lookup) of a (tenant, key) at a time: see the module's docstring.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))"
_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(hashtextextended(%(lock)s, 0))"

_FENCE = """
INSERT INTO sandbox_fences (tenant, effect_key, token)
VALUES (%(tenant)s, %(idempotency_key)s, %(fencing_token)s)
ON CONFLICT (tenant, effect_key) DO UPDATE
SET token = GREATEST(sandbox_fences.token, EXCLUDED.token),
    seen_at = CASE WHEN EXCLUDED.token > sandbox_fences.token
                   THEN clock_timestamp() ELSE sandbox_fences.seen_at END
RETURNING token
"""

_NOW_MS = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms"

_EARLIER = """
SELECT audit_id, payload_hash, response FROM sandbox_actions
WHERE tool = %(tool)s AND tenant = %(tenant)s AND idempotency_key = %(dedupe_key)s
"""


def _lock_name(tenant: str | None, key: str) -> str:
    return f"sandbox:{tenant or ''}:{key}"


async def act(
    pool: AsyncPool, call: Call, respond: Callable[[int], dict[str, Any]]
) -> Outcome | Refused:
    """Act once (or, for a key-honouring tool that already acted on this key, replay), unless
    the request is fenced or late."""
    dedupe_key = call.idempotency_key if call.dedupe else None
    params: dict[str, Any] = {
        "tool": call.tool,
        "tenant": call.tenant,
        "run_id": call.run_id,
        "tool_call_id": call.tool_call_id,
        "payload_hash": call.payload_hash,
        "idempotency_key": call.idempotency_key,
        "fencing_token": call.fencing_token,
        "dedupe_key": dedupe_key,
        "ref": call.idempotency_key if call.record_ref else None,
    }
    async with pool.connection() as conn:
        async with conn.transaction():
            if call.idempotency_key is not None:
                lock = {"lock": _lock_name(call.tenant, call.idempotency_key)}
                await conn.execute(_LOCK, lock)
                if call.fencing_token is not None:
                    fence = await (await conn.execute(_FENCE, params)).fetchone()
                    assert fence is not None
                    if int(fence["token"]) > call.fencing_token:
                        return Refused("fenced", seen=int(fence["token"]))
            if dedupe_key is not None and (earlier := await _earlier(conn, params)) is not None:
                return earlier
            if call.deadline_ms is not None:
                clock = await (await conn.execute(_NOW_MS)).fetchone()
                assert clock is not None
                if int(clock["now_ms"]) >= call.deadline_ms:
                    return Refused("late", now_ms=int(clock["now_ms"]))
            row = await (await conn.execute(_AUDIT, params)).fetchone()
            assert row is not None
            audit_id = int(row["id"])
            response = respond(audit_id)
            params |= {"audit_id": audit_id, "response": Jsonb(response)}
            stored = await (await conn.execute(_ACTION, params)).fetchone()
            if stored is None:
                # A concurrent request with the same key committed first (ON CONFLICT waited
                # for it): undo our audit row, this request did not act. (The key's lock
                # makes this unreachable; kept as the backstop of the unique index.)
                raise psycopg.Rollback()
        if stored is None:
            earlier = await _earlier(conn, params)
            assert earlier is not None
            return earlier
        return Outcome(response=response, audit_id=audit_id, replayed=False)


async def _earlier(conn: AsyncConn, params: dict[str, Any]) -> Outcome | None:
    row = await (await conn.execute(_EARLIER, params)).fetchone()
    if row is None:
        return None
    return Outcome(
        response=row["response"],
        audit_id=int(row["audit_id"]),
        replayed=True,
        conflict=row["payload_hash"] != params["payload_hash"],
    )


async def actions_by_ref(
    pool: AsyncPool, tool: str, ref: str, tenant: str | None
) -> list[dict[str, Any]]:
    sql = """
    SELECT a.audit_id, a.response, s.tenant, s.run_id, s.tool_call_id, s.payload_hash, s.acted_at
    FROM sandbox_actions a JOIN sandbox_audit s ON s.id = a.audit_id
    WHERE a.tool = %(tool)s AND a.ref = %(ref)s
      AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)
    ORDER BY a.audit_id
    """
    async with pool.connection() as conn, conn.transaction():
        if tenant is not None:
            # Wait for a request of this key that is between its checks and its commit.
            await conn.execute(_LOCK_SHARED, {"lock": _lock_name(tenant, ref)})
        rows = await (
            await conn.execute(sql, {"tool": tool, "ref": ref, "tenant": tenant})
        ).fetchall()
    return [{**r, "acted_at": r["acted_at"].isoformat()} for r in rows]


async def audit_rows(
    pool: AsyncPool, run_id: str | None, tool: str | None, tenant: str | None
) -> list[dict[str, Any]]:
    sql = """
    SELECT id, tool, tenant, run_id, tool_call_id, payload_hash, idempotency_key, fencing_token,
           acted_at
    FROM sandbox_audit
    WHERE (%(run_id)s::text IS NULL OR run_id = %(run_id)s)
      AND (%(tool)s::text IS NULL OR tool = %(tool)s)
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
    ORDER BY id
    """
    params = {"run_id": run_id, "tool": tool, "tenant": tenant}
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, params)).fetchall()
    return [{**r, "acted_at": r["acted_at"].isoformat()} for r in rows]


async def reset(pool: AsyncPool) -> None:
    async with pool.connection() as conn:
        await conn.execute("TRUNCATE sandbox_actions, sandbox_audit, sandbox_fences")


async def schema_ready(pool: AsyncPool) -> bool:
    async with pool.connection() as conn:
        row = await (await conn.execute(SCHEMA_READY)).fetchone()
    return bool(row and row["ok"])

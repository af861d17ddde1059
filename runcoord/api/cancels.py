"""Cancelling a run: the request's row and its outbox row (a CancelRun for runs.inbox) in ONE
PostgreSQL transaction, like a turn (see turns.py).

The client's Idempotency-Key makes a retried request return the first answer instead of
sending a second CancelRun; a second cancel under another key is sent, and the coordinator
ignores it (the run is cancelling already, or over). The coordinator is the judge: a cancel
that reaches a run after it finished changes nothing, and the journal says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from runcoord.api.keys import Key
from runcoord.api.turns import enqueue
from runcoord.codec import AvroCodec
from runcoord.domain.inputs import CancelRun

Conn = psycopg.Connection[tuple[Any, ...]]

MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class Cancelled:
    """What became of a cancel request:

    - ``accepted``: recorded now, its CancelRun on its way to the coordinator;
    - ``replayed``: this Idempotency-Key asked the same before (nothing sent again);
    - ``key_reused``: this Idempotency-Key was used to cancel another run, or with another
      reason: nothing was sent.
    """

    outcome: Literal["accepted", "replayed", "key_reused"]
    run_id: str
    reason: str


def request(
    conn: Conn,
    key: Key,
    tenant: str,
    run_id: str,
    reason: str,
    idempotency_key: str,
    inbox: str,
    codec: AvroCodec,
) -> Cancelled:
    """Ask the coordinator to cancel ``tenant``'s run (the caller checked it is the tenant's).
    ``key`` is who asked, kept with the row."""
    with conn.transaction():
        # A concurrent request with the same key waits here for the first to commit, then
        # inserts nothing and reads the winner's row below.
        inserted = conn.execute(
            "INSERT INTO api_run_cancels (tenant, idempotency_key, run_id, reason, key_id) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING run_id",
            (tenant, idempotency_key, run_id, reason, key.key_id),
        ).fetchone()
        if inserted is not None:
            # Raising rolls the row back too: no recorded cancel without its way to the run.
            enqueue(conn, inbox, run_id, CancelRun(run_id, tenant, reason), codec)
            return Cancelled("accepted", run_id, reason)
        row = conn.execute(
            "SELECT run_id, reason FROM api_run_cancels WHERE tenant = %s AND idempotency_key = %s",
            (tenant, idempotency_key),
        ).fetchone()
    assert row is not None  # the conflicting row exists and rows are never deleted
    same = (row[0], row[1]) == (run_id, reason)
    return Cancelled("replayed" if same else "key_reused", str(row[0]), str(row[1]))


def earlier(
    conn: Conn, tenant: str, run_id: str, reason: str, idempotency_key: str
) -> Cancelled | None:
    """The same cancel recorded before under this Idempotency-Key (a replay), else None."""
    row = conn.execute(
        "SELECT run_id, reason FROM api_run_cancels WHERE tenant = %s AND idempotency_key = %s",
        (tenant, idempotency_key),
    ).fetchone()
    if row is None or (row[0], row[1]) != (run_id, reason):
        return None
    return Cancelled("replayed", run_id, reason)

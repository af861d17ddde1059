"""Reading runs for the API: from the projection, scoped to the caller's tenant.

A run of another tenant and a run that does not exist answer the same (None -> 404): telling
them apart would let one tenant probe another's run ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]


def iso(at: Any) -> str | None:
    """A timestamp column as ISO 8601, or None."""
    return at.isoformat() if isinstance(at, datetime) else None


def get_run(conn: Conn, journal: str, tenant: str, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT run_id, tenant, thread_id, phase, provider_status, steps, outcome, accepted_at, "
        "updated_at, finished_at, last_seq FROM forensics_runs "
        "WHERE journal = %s AND run_id = %s",
        (journal, run_id),
    ).fetchone()
    if row is not None:
        if row[1] != tenant:
            return None
        return {
            "run_id": row[0],
            "thread_id": row[2],
            "status": row[3],
            "provider_status": row[4],
            "steps": row[5],
            "outcome": row[6],
            "accepted_at": iso(row[7]),
            "updated_at": iso(row[8]),
            "finished_at": iso(row[9]),
            "events": row[10],
        }
    # Accepted by the API but not projected yet (the relay or the coordinator is behind), or
    # never to be: the relay parked its StartRun (Kafka refused it for good; see relay.py).
    turn = conn.execute(
        "SELECT run_id, thread_id, created_at, inbox FROM api_turns "
        "WHERE run_id = %s AND tenant = %s",
        (run_id, tenant),
    ).fetchone()
    if turn is None:
        return None
    parked = conn.execute(
        "SELECT failed_at, failure FROM api_outbox WHERE record_key = %s AND topic = %s "
        "AND record_name = 'StartRun' AND failed_at IS NOT NULL ORDER BY id LIMIT 1",
        (str(turn[0]).encode(), turn[3]),
    ).fetchone()
    return {
        "run_id": turn[0],
        "thread_id": turn[1],
        "status": "pending" if parked is None else "failed",
        "provider_status": None,
        "steps": 0,
        "outcome": None if parked is None else f"not started: {parked[1]}",
        "accepted_at": iso(turn[2]),
        "updated_at": iso(turn[2] if parked is None else parked[0]),
        "finished_at": None if parked is None else iso(parked[0]),
        "events": 0,
    }

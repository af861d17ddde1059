"""A tenant's conversations (threads): the client names them, runcoord owns the mapping to the
provider. A thread's provider thread (Assistants) or conversation (Responses) is created by
the provider executor on its first turn, at most once, under the effect ledger key
``conversation_key(tenant, thread, protocol)``; that ledger row is the mapping, read here."""

from __future__ import annotations

from typing import Any

import psycopg

from runcoord.api.runs import iso
from runcoord.domain.ids import conversation_key

Conn = psycopg.Connection[tuple[Any, ...]]
PROTOCOLS = ("assistants", "responses")


def get_thread(conn: Conn, tenant: str, thread_id: str) -> dict[str, Any] | None:
    """The tenant's thread with its provider threads and its runs, newest first; None when the
    tenant has no such thread (another tenant's answers the same)."""
    row = conn.execute(
        "SELECT thread_id, metadata, created_at FROM api_threads "
        "WHERE tenant = %s AND thread_id = %s",
        (tenant, thread_id),
    ).fetchone()
    if row is None:
        return None
    keys = {
        conversation_key(tenant=tenant, conversation=thread_id, provider=p): p for p in PROTOCOLS
    }
    provider_threads = []
    for key, state, result, error in conn.execute(
        "SELECT effect_key, state, result, error FROM effect_ledger WHERE effect_key = ANY(%s)",
        (list(keys),),
    ).fetchall():
        provider_threads.append(
            {
                "protocol": keys[key],
                "state": state,  # claimed (being created), succeeded, failed, unknown
                "id": result.get("thread_id") if isinstance(result, dict) else None,
                "error": error,
            }
        )
    runs = conn.execute(
        "SELECT run_id, provider, assistant_id, created_at FROM api_turns "
        "WHERE tenant = %s AND thread_id = %s ORDER BY created_at DESC LIMIT 100",
        (tenant, thread_id),
    ).fetchall()
    return {
        "thread_id": row[0],
        "metadata": row[1],
        "created_at": iso(row[2]),
        "provider_threads": sorted(provider_threads, key=lambda t: str(t["protocol"])),
        "runs": [
            {"run_id": r[0], "provider": r[1], "assistant_id": r[2], "created_at": iso(r[3])}
            for r in runs
        ],
    }

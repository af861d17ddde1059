"""Which assistants a tenant may run (api_tenant_assistants). The API's default assistant is
every tenant's; any other must be allowed for the tenant, or the turn is refused (403)."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]


def allow(conn: Conn, tenant: str, assistant_id: str) -> bool:
    """Allow ``tenant`` to run ``assistant_id``; False when it already could."""
    if not tenant or not assistant_id:
        raise ValueError("an allowance needs a tenant and an assistant")
    cur = conn.execute(
        "INSERT INTO api_tenant_assistants (tenant, assistant_id) VALUES (%s, %s) "
        "ON CONFLICT DO NOTHING",
        (tenant, assistant_id),
    )
    return cur.rowcount == 1


def revoke(conn: Conn, tenant: str, assistant_id: str) -> bool:
    cur = conn.execute(
        "DELETE FROM api_tenant_assistants WHERE tenant = %s AND assistant_id = %s",
        (tenant, assistant_id),
    )
    return cur.rowcount == 1


def allowed(conn: Conn, tenant: str) -> list[str]:
    rows = conn.execute(
        "SELECT assistant_id FROM api_tenant_assistants WHERE tenant = %s ORDER BY assistant_id",
        (tenant,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def may_run(conn: Conn, tenant: str, assistant_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM api_tenant_assistants WHERE tenant = %s AND assistant_id = %s",
        (tenant, assistant_id),
    ).fetchone()
    return row is not None

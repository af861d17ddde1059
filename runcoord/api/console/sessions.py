"""Console sessions: a random token in an HttpOnly cookie, its hash and a CSRF token stored.

The API key is proved once, at sign-in, and never kept in the browser; every request finds
the session's key again, so a revoked key ends its sessions at once. The CSRF token is put in
every form the console renders and checked on every POST: a page of another site cannot read
it (and the SameSite=Strict cookie does not go with its requests anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from runcoord.api import keys

Conn = psycopg.Connection[tuple[Any, ...]]

COOKIE = "runcoord_console"
TTL_S = 8 * 3600  # a working day; signing in again costs one paste of the key


@dataclass(frozen=True)
class Session:
    key: keys.Key
    csrf: str

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(conn: Conn, api_key: str) -> str | None:
    """A new session's token for a valid key; None when the key is not one."""
    found = keys.lookup(conn, api_key)
    if found is None:
        return None
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO console_sessions (session_hash, key_id, csrf_token, expires_at) "
        "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
        (_hash(token), found.key_id, secrets.token_urlsafe(32), TTL_S),
    )
    # Expired sessions go as new ones come: no sweeper to run.
    conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    return token


def find(conn: Conn, token: str | None) -> Session | None:
    """The session of a cookie's token while it lasts and its key is not revoked."""
    if not token:
        return None
    row = conn.execute(
        "SELECT key_id, csrf_token FROM console_sessions "
        "WHERE session_hash = %s AND expires_at > now()",
        (_hash(token),),
    ).fetchone()
    if row is None:
        return None
    key = keys.by_id(conn, str(row[0]))
    return None if key is None else Session(key, str(row[1]))


def close(conn: Conn, token: str | None) -> None:
    if token:
        conn.execute("DELETE FROM console_sessions WHERE session_hash = %s", (_hash(token),))

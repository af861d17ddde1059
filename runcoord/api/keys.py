"""Per-tenant API keys: minted once, shown once, stored only as a hash.

A key reads ``rk_<key_id>_<secret>``: the key id finds the row without scanning, the secret
(32 random bytes) is compared by hash in constant time. Keys this random need no slow KDF:
there is no dictionary to try against a stolen hash.

A key may have a name (who holds it) and a role: only an ``approver`` key decides approval
requests, and its name (else its id) is the approver recorded. An ``operator`` key sees the runs
of every tenant in the console (its tenant is only a label there); on the /v1 routes it is a
key of its tenant like any other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]

PREFIX = "rk_"
APPROVER = "approver"
OPERATOR = "operator"
ROLES = (APPROVER, OPERATOR)  # a key without a role posts turns and reads runs


@dataclass(frozen=True)
class Key:
    """A valid key's identity: the tenant it acts for, and what it may do."""

    key_id: str
    tenant: str
    name: str | None = None
    role: str | None = None

    @property
    def operator(self) -> bool:
        """May see every tenant's runs in the console."""
        return self.role == OPERATOR

    @property
    def approver(self) -> str:
        """How a decision made with this key is signed: its name, else its id."""
        return self.name or self.key_id


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint(tenant: str) -> tuple[str, str, str]:
    """(key_id, the key to hand out, its hash). Nothing is stored here."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, _hash(key)


def create(conn: Conn, tenant: str, *, name: str | None = None, role: str | None = None) -> str:
    """Store a new key for ``tenant`` and return it: the only time it is ever visible."""
    if not tenant:
        raise ValueError("a key needs a tenant")
    if name == "":
        raise ValueError("a key's name, when given, is not empty")
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}, or none")
    key_id, key, digest = mint(tenant)
    conn.execute(
        "INSERT INTO api_keys (key_id, tenant, key_hash, name, role) VALUES (%s, %s, %s, %s, %s)",
        (key_id, tenant, digest, name, role),
    )
    return key


def lookup(conn: Conn, key: str) -> Key | None:
    """The identity of a valid, unrevoked key; None otherwise (whatever was wrong with it)."""
    if not key.startswith(PREFIX) or key.count("_") < 2:
        return None
    key_id = key[len(PREFIX) :].split("_", 1)[0]
    row = conn.execute(
        "SELECT tenant, key_hash, name, role FROM api_keys "
        "WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    ).fetchone()
    if row is None or not hmac.compare_digest(str(row[1]), _hash(key)):
        return None
    return Key(key_id, str(row[0]), row[2], row[3])


def by_id(conn: Conn, key_id: str) -> Key | None:
    """The identity of an unrevoked key by its id alone: for a console session, which proved
    the key when it signed in and holds only the id since."""
    row = conn.execute(
        "SELECT tenant, name, role FROM api_keys WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    ).fetchone()
    return None if row is None else Key(key_id, str(row[0]), row[1], row[2])


def tenant_for(conn: Conn, key: str) -> str | None:
    """The tenant of a valid, unrevoked key; None otherwise."""
    found = lookup(conn, key)
    return None if found is None else found.tenant


def revoke(conn: Conn, key_id: str) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    )
    return cur.rowcount == 1

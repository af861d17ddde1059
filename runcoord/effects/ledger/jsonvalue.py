"""Canonical JSON: the request hash, and the one normal form every adapter stores results in."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from runcoord.effects.ledger.model import JSON


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: the same value always gives the same bytes.

    Never change this encoding: request hashes stored in the ledger are computed with it.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def request_hash(request: Any) -> str:
    """sha256 (hex) of the request's canonical JSON, for EffectMeta.request_hash."""
    return hashlib.sha256(canonical_json(request)).hexdigest()


def normalize(value: JSON) -> JSON:
    """The value as it comes back from a jsonb column (tuples become lists, and so on), so
    that the in-memory adapter stores and compares exactly what PostgreSQL would."""
    loaded: JSON = json.loads(canonical_json(value))
    return loaded

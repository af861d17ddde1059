"""The effect ledger: at-most-once execution of side effects per effect key (G1).

Start at `port.Ledger` for the semantics; `PostgresLedger` is the source of truth,
`InMemoryLedger` serves unit tests, `CachedLedger` puts a Redis fast path in front of either.
"""

from effects.ledger.cached import CachedLedger
from effects.ledger.errors import (
    LedgerError,
    LedgerMisconfigured,
    LedgerUnavailable,
    RequestConflict,
)
from effects.ledger.jsonvalue import canonical_json, request_hash
from effects.ledger.memory import InMemoryLedger
from effects.ledger.model import (
    FINAL_STATES,
    JSON,
    Acquired,
    Busy,
    Claim,
    EffectMeta,
    EffectRecord,
    EffectState,
    Finished,
)
from effects.ledger.port import Ledger
from effects.ledger.postgres import PostgresLedger
from effects.ledger.redis_guard import RedisGuard, connect_redis

__all__ = [
    "FINAL_STATES",
    "JSON",
    "Acquired",
    "Busy",
    "CachedLedger",
    "Claim",
    "EffectMeta",
    "EffectRecord",
    "EffectState",
    "Finished",
    "InMemoryLedger",
    "Ledger",
    "LedgerError",
    "LedgerMisconfigured",
    "LedgerUnavailable",
    "PostgresLedger",
    "RedisGuard",
    "RequestConflict",
    "canonical_json",
    "connect_redis",
    "request_hash",
]

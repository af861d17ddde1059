"""The effect ledger: at-most-once execution of side effects per effect key (G1).

Start at `port.Ledger` for the semantics; `PostgresLedger` is the source of truth,
`InMemoryLedger` serves unit tests, `CachedLedger` puts a Redis fast path in front of either.
"""

from runcoord.effects.ledger.cached import CachedLedger
from runcoord.effects.ledger.errors import (
    LedgerError,
    LedgerMisconfigured,
    LedgerUnavailable,
    RequestConflict,
)
from runcoord.effects.ledger.jsonvalue import canonical_json, request_hash
from runcoord.effects.ledger.memory import InMemoryLedger
from runcoord.effects.ledger.model import (
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
from runcoord.effects.ledger.port import Ledger
from runcoord.effects.ledger.postgres import PostgresLedger
from runcoord.effects.ledger.redis_guard import RedisGuard, connect_redis

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

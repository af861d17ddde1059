"""The effect ledger: at-most-once execution of side effects per effect key (G1).

Start at `port.Ledger` for the semantics; PostgreSQL is the source of truth (`PostgresLedger`,
and `AsyncPostgresLedger` for the executors' event loops); `InMemoryLedger` serves unit tests.
"""

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
from runcoord.effects.ledger.port import AsyncLedger, Ledger
from runcoord.effects.ledger.postgres import AsyncPostgresLedger, PostgresLedger
from runcoord.effects.ledger.redis_guard import RedisGuard, connect_redis

__all__ = [
    "FINAL_STATES",
    "JSON",
    "Acquired",
    "AsyncLedger",
    "AsyncPostgresLedger",
    "Busy",
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

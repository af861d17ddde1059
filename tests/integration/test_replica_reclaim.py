"""A replica restarted under its name takes back what its dead incarnations held, in Redis.

The ledger's leases are covered by the contract suite (tests/ledger_contract.py); this is
what lives in Redis only: concurrency slots, and lease hints a holder left behind when it
died between the store and Redis. Both would otherwise block a restarted replica for up to
30 s (tests/integration/test_random_kills.py shows what that costs).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from runcoord.db import migrate
from runcoord.effects.ledger import (
    Busy,
    CachedLedger,
    EffectMeta,
    EffectState,
    Finished,
    PostgresLedger,
    RedisGuard,
    connect_redis,
)
from runcoord.effects.limits import ConcurrencyLimiter, Limits

pytestmark = pytest.mark.integration

REPLICA = "t1.runcoord-executor-tools/tools-0"
DEAD, ALIVE = f"{REPLICA}/100/1", f"{REPLICA}/200/2"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect_redis(redis_url, timeout_s=2.0)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis, unique: str) -> Iterator[str]:
    p = f"test:reclaim-{unique}:"
    yield p
    for k in client.scan_iter(f"{p}*"):
        client.delete(k)


def test_a_restarted_replica_frees_the_slots_of_its_dead_incarnations(
    client: redis.Redis, prefix: str
) -> None:
    def limiter(holder: str) -> ConcurrencyLimiter:
        guard = RedisGuard(client, cooldown_s=0.0)
        return ConcurrencyLimiter(guard, Limits(per_tenant=3), prefix=prefix, holder=holder)

    dead, alive, other = limiter(DEAD), limiter(ALIVE), limiter(f"{REPLICA}0/100/1")
    assert dead.acquire("t1", "create_ticket") and dead.acquire("t1", "send_email")
    assert other.acquire("t1", "create_ticket"), "another replica, with a look-alike name"
    assert alive.acquire("t1", "create_ticket") is None, "the pool is full of ghosts"

    assert alive.reclaim(REPLICA, ALIVE) == 2
    assert alive.acquire("t1", "create_ticket") and alive.acquire("t1", "charge_card")
    assert alive.acquire("t1", "create_ticket") is None, "the other replica keeps its slot"
    assert alive.reclaim(REPLICA, ALIVE) == 0, "its own slots are kept"


def test_a_lease_hint_left_by_a_dead_holder_no_longer_answers_busy(
    pg_dsn: str, client: redis.Redis, prefix: str
) -> None:
    migrate(pg_dsn)
    store = PostgresLedger(pg_dsn)
    try:
        ledger = CachedLedger(store, RedisGuard(client, cooldown_s=0.0), prefix=prefix)
        key = f"ek-test-{uuid.uuid4().hex}"
        meta = EffectMeta("tool_call", "t1", "run-1", "step_1", "call_1", "hash")
        assert ledger.claim(key, meta, DEAD, 30.0)
        # The holder completes in the store and dies before it can drop its hint in Redis.
        assert store.complete(key, 1, EffectState.SUCCEEDED, {"ok": True})
        assert isinstance(ledger.claim(key, meta, ALIVE, 30.0), Busy), "the stale hint"

        assert ledger.reclaim(REPLICA, ALIVE) == []  # no live lease: the store had nothing
        assert ledger.claim(key, meta, ALIVE, 30.0) == Finished(
            key, EffectState.SUCCEEDED, {"ok": True}, None
        )
    finally:
        store.close()

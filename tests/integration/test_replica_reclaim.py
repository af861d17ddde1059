"""A replica restarted under its name takes back what its dead incarnations held, in Redis.

The ledger's leases are covered by the contract suite (tests/ledger_contract.py). What lives
in Redis is the tool-call limiter's fleet membership: a dead incarnation would count as a live
replica until its member expires, shrinking every replica's share of each pool meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from runcoord.effects.ledger import RedisGuard, connect_redis
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


def test_a_restarted_replica_drops_the_memberships_of_its_dead_incarnations(
    client: redis.Redis, prefix: str
) -> None:
    made: list[ConcurrencyLimiter] = []

    def limiter(holder: str) -> ConcurrencyLimiter:
        guard = RedisGuard(client, cooldown_s=0.0)
        # Heartbeats an hour apart and members that live a minute: only reclaim drops one.
        lim = ConcurrencyLimiter(
            guard,
            Limits(per_tenant=6),
            prefix=prefix,
            holder=holder,
            heartbeat_s=3600,
            member_ttl_s=60,
        )
        made.append(lim)
        return lim

    try:
        dead, other, alive = limiter(DEAD), limiter(f"{REPLICA}0/100/1"), limiter(ALIVE)
        assert dead.acquire("t1", "create_ticket"), "the dead incarnation, while it lived"
        assert other.acquire("t1", "create_ticket"), "another replica, with a look-alike name"
        assert alive.acquire("t1", "create_ticket")
        assert alive.replicas == 3 and alive.share(6) == 2, "the ghost takes a share"

        assert alive.reclaim(REPLICA, ALIVE) == 1
        assert alive.heartbeat() == 2 and alive.share(6) == 3
        assert alive.reclaim(REPLICA, ALIVE) == 0, "its own membership is kept"
        assert alive.heartbeat() == 2
    finally:
        for lim in made:
            lim.close()

"""The limiters against real Redis: the tool-call limiter's fleet of replicas sharing each pool
(the heartbeat script, members expiring, Redis cut off), and the exact Redis slots with their
local fallback while Redis is unreachable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from runcoord.effects.ledger import RedisGuard, connect_redis
from runcoord.effects.limits import ConcurrencyLimiter, Limits, Permit
from runcoord.effects.limits.limiter import RedisSlots
from runcoord.stack.polling import wait_until
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect_redis(redis_url, timeout_s=2.0)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis, unique: str) -> Iterator[str]:
    p = f"test:limit-{unique}:"
    yield p
    for k in client.scan_iter(f"{p}*"):
        client.delete(k)


# --------------------------------------------------------------------------- the fleet

Replica = Callable[..., ConcurrencyLimiter]


@pytest.fixture
def replica(client: redis.Redis, prefix: str) -> Iterator[Replica]:
    """Factory: a replica of the test's fleet (heartbeats 0.1 s apart, members live 0.5 s
    unless told otherwise); closed after the test."""
    made: list[ConcurrencyLimiter] = []

    def make(limits: Limits, on: redis.Redis | None = None, **kw: float) -> ConcurrencyLimiter:
        kw.setdefault("heartbeat_s", 0.1)
        kw.setdefault("member_ttl_s", 0.5)
        guard = RedisGuard(on or client, cooldown_s=0.0)
        lim = ConcurrencyLimiter(guard, limits, prefix=prefix, **kw)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        lim.close()


def _sees(lim: ConcurrencyLimiter, n: int) -> Callable[[], str | None]:
    return lambda: None if lim.replicas == n else f"it sees {lim.replicas} replicas"


def test_two_replicas_each_get_half_and_together_never_exceed_the_limit(
    replica: Replica,
) -> None:
    limits = Limits(per_tenant=5, per_tool={"charge_card": 3})
    a, b = replica(limits), replica(limits)
    assert a.acquire("t0", "warm_up") and b.acquire("t0", "warm_up")  # both joined
    wait_until(_sees(a, 2), timeout=10, what="a to see b")
    wait_until(_sees(b, 2), timeout=10, what="b to see a")
    assert (a.share(5), b.share(5), a.share(3)) == (2, 2, 1)

    held = {lim: [lim.acquire("t1", "create_ticket") for _ in range(3)] for lim in (a, b)}
    assert [p is not None for p in held[a]] == [True, True, False], "floor(5 / 2)"
    assert [p is not None for p in held[b]] == [True, True, False]
    assert a.acquire("t2", "charge_card") and b.acquire("t3", "charge_card")
    assert a.acquire("t4", "charge_card") is None, "floor(3 / 2) of the tool's pool"

    # Both replicas at full tilt, from many threads: never more than the limit in flight.
    in_flight, peak, lock = 0, 0, threading.Lock()
    stop = time.monotonic() + 1.5

    def hammer(lim: ConcurrencyLimiter) -> None:
        nonlocal in_flight, peak
        while time.monotonic() < stop:
            permit = lim.acquire("t9", "search_kb")
            if permit is None:
                time.sleep(0.001)
                continue
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.002)
            with lock:
                in_flight -= 1
            lim.release(permit)

    threads = [threading.Thread(target=hammer, args=(lim,)) for lim in (a, b) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 2 < peak <= 4, f"{peak} in flight at most: both replicas busy, 2 + 2, never over 5"


def test_when_a_replica_stops_heartbeating_the_others_share_grows_back(
    replica: Replica,
) -> None:
    limits = Limits(per_tenant=6)
    a = replica(limits, member_ttl_s=2.0)
    # b beats once (on its first acquire) and never again: it "crashed".
    b = replica(limits, heartbeat_s=3600, member_ttl_s=2.0)
    assert b.acquire("t1", "x") and a.acquire("t1", "x")
    assert a.replicas == 2, "a's first acquire learned the fleet's size"
    assert [a.acquire("t1", "x") is not None for _ in range(3)] == [True, True, False]

    wait_until(_sees(a, 1), timeout=10, what="b's member to expire")
    assert a.share(6) == 6
    assert [a.acquire("t1", "x") is not None for _ in range(4)] == [True] * 3 + [False]


def test_a_replica_that_closes_leaves_at_once(replica: Replica, client: redis.Redis) -> None:
    limits = Limits(per_tenant=6)
    a, b = replica(limits, heartbeat_s=3600), replica(limits, heartbeat_s=3600)
    assert a.acquire("t1", "x") and b.acquire("t1", "x")
    assert a.heartbeat() == 2
    b.close()
    assert a.heartbeat() == 1, "no waiting for b's member to expire"


def test_redis_down_keeps_the_last_fleet_size_or_allows_the_fallback(
    replica: Replica, redis_proxy: TcpProxy
) -> None:
    proxied = connect_redis(f"redis://{redis_proxy.url_netloc}/0", timeout_s=0.2)
    limits = Limits(per_tenant=8, default_per_tool=100)
    try:
        a = replica(limits, on=proxied, heartbeat_s=3600, member_ttl_s=30)
        b = replica(limits, heartbeat_s=3600, member_ttl_s=30)
        assert b.acquire("t0", "x") is not None
        first = a.acquire("t1", "x")
        assert first is not None and not first.local and a.replicas == 2

        redis_proxy.stop()  # Redis is out of a's reach: it keeps N = 2
        assert a.heartbeat() is None and a.replicas == 2
        more = [a.acquire("t1", "x") for _ in range(4)]
        assert [p is not None and p.local for p in more] == [True] * 3 + [False], "8 / 2"

        # A replica that never reached Redis allows floor(8 * 0.25) per pool on its own.
        c = replica(limits, on=proxied, fallback_share=0.25)
        alone = [c.acquire("t1", "x") for _ in range(3)]
        assert [p is not None and p.local for p in alone] == [True, True, False]
        assert c.replicas is None

        redis_proxy.start()  # back: c joins the fleet, which is now 3 strong
        assert c.heartbeat() == 3 and c.share(8) == 2
        assert c.acquire("t1", "y") is None, "2 held: its share among 3 replicas"
    finally:
        proxied.close()


class CountingRedis(redis.Redis):
    """A client that notes every command it sends (a script call is one EVALSHA)."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)


def test_it_costs_no_redis_command_per_call(replica: Replica, redis_url: str) -> None:
    counting = CountingRedis.from_url(redis_url, decode_responses=True)
    counting.sent = []
    try:
        lim = replica(Limits(per_tenant=4), on=counting, heartbeat_s=3600)
        for _ in range(200):
            permit = lim.acquire("t1", "x")
            assert permit is not None
            assert lim.renew(permit)
            lim.release(permit)
        assert counting.sent == ["EVALSHA"], "one heartbeat, on the first acquire"
        lim.close()
        assert counting.sent == ["EVALSHA", "ZREM"], "leaving the fleet"
    finally:
        counting.close()


# --------------------------------------------------------------------------- exact Redis slots


def slots(client: redis.Redis, prefix: str, limits: Limits, **kw: float) -> RedisSlots:
    return RedisSlots(RedisGuard(client, cooldown_s=0.0), limits, prefix=prefix, **kw)


def test_slots_tenant_pool_is_shared_by_its_tools(client: redis.Redis, prefix: str) -> None:
    lim = slots(client, prefix, Limits(per_tenant=2, default_per_tool=10))
    first = lim.acquire("t1", "create_ticket")
    second = lim.acquire("t1", "send_email")
    assert first is not None and second is not None and not first.local
    assert lim.acquire("t1", "create_ticket") is None
    assert lim.acquire("t2", "create_ticket") is not None, "another tenant is not held back"
    lim.release(first)
    assert lim.acquire("t1", "create_ticket") is not None


def test_slots_tool_pool_protects_the_tool_across_tenants(client: redis.Redis, prefix: str) -> None:
    lim = slots(client, prefix, Limits(per_tenant=10, per_tool={"charge_card": 1}))
    held = lim.acquire("t1", "charge_card")
    assert held is not None
    assert lim.acquire("t2", "charge_card") is None
    assert lim.acquire("t2", "search_kb") is not None
    lim.release(held)
    assert lim.acquire("t2", "charge_card") is not None


def test_slots_of_a_crashed_holder_free_when_the_permit_expires(
    client: redis.Redis, prefix: str
) -> None:
    lim = slots(client, prefix, Limits(per_tenant=1), ttl_s=0.3)
    started = time.monotonic()
    assert lim.acquire("t1", "post_note") is not None  # never released: the holder "crashed"
    assert lim.acquire("t1", "post_note") is None
    wait_until(
        lambda: None if lim.acquire("t1", "post_note") is not None else "still held",
        timeout=5,
        interval=0.02,
        what="the slot to come back",
    )
    assert time.monotonic() - started >= 0.25


def test_slots_renew_pushes_the_expiry_and_fails_once_expired(
    client: redis.Redis, prefix: str
) -> None:
    lim = slots(client, prefix, Limits(per_tenant=1), ttl_s=30)
    permit = lim.acquire("t1", "send_email")
    assert permit is not None
    tenant_key, _ = lim.pool_keys("t1", "send_email")
    before = client.zscore(tenant_key, permit.id)
    assert lim.renew(permit)
    after = client.zscore(tenant_key, permit.id)
    assert before is not None and after is not None and after >= before
    lim.release(permit)
    assert not lim.renew(permit)


def test_slots_with_redis_down_allow_up_to_the_local_share(
    redis_proxy: TcpProxy, client: redis.Redis, prefix: str
) -> None:
    proxied = connect_redis(f"redis://{redis_proxy.url_netloc}/0", timeout_s=0.2)
    lim = slots(proxied, prefix, Limits(per_tenant=8, default_per_tool=100), fallback_share=0.25)
    in_redis = lim.acquire("t1", "create_ticket")
    assert in_redis is not None and not in_redis.local

    redis_proxy.stop()
    local: list[Permit] = []
    while (p := lim.acquire("t1", "create_ticket")) is not None:
        local.append(p)
        assert len(local) <= 8
    assert len(local) == 2 and all(p.local for p in local), "floor(8 * 0.25) local slots"
    assert lim.renew(local[0])
    lim.release(local[0])
    assert lim.acquire("t1", "create_ticket") is not None
    lim.release(in_redis)  # cannot reach Redis: the slot will expire on its own, no error

    redis_proxy.start()
    back = lim.acquire("t1", "create_ticket")
    assert back is not None and not back.local
    proxied.close()

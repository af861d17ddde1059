"""The per-tenant / per-tool concurrency limiter against real Redis, and its local fallback
while Redis is unreachable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from runcoord.effects.ledger import RedisGuard, connect_redis
from runcoord.effects.limits import ConcurrencyLimiter, Limits, Permit
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


def limiter(client: redis.Redis, prefix: str, limits: Limits, **kw: float) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(RedisGuard(client, cooldown_s=0.0), limits, prefix=prefix, **kw)


def test_tenant_pool_is_shared_by_its_tools(client: redis.Redis, prefix: str) -> None:
    lim = limiter(client, prefix, Limits(per_tenant=2, default_per_tool=10))
    first = lim.acquire("t1", "create_ticket")
    second = lim.acquire("t1", "send_email")
    assert first is not None and second is not None and not first.local
    assert lim.acquire("t1", "create_ticket") is None
    assert lim.acquire("t2", "create_ticket") is not None, "another tenant is not held back"
    lim.release(first)
    assert lim.acquire("t1", "create_ticket") is not None


def test_tool_pool_protects_the_tool_across_tenants(client: redis.Redis, prefix: str) -> None:
    lim = limiter(client, prefix, Limits(per_tenant=10, per_tool={"charge_card": 1}))
    held = lim.acquire("t1", "charge_card")
    assert held is not None
    assert lim.acquire("t2", "charge_card") is None
    assert lim.acquire("t2", "search_kb") is not None
    lim.release(held)
    assert lim.acquire("t2", "charge_card") is not None


def test_a_crashed_holder_frees_its_slot_when_the_permit_expires(
    client: redis.Redis, prefix: str
) -> None:
    lim = limiter(client, prefix, Limits(per_tenant=1), ttl_s=0.3)
    started = time.monotonic()
    assert lim.acquire("t1", "post_note") is not None  # never released: the holder "crashed"
    assert lim.acquire("t1", "post_note") is None
    deadline = started + 5
    while (permit := lim.acquire("t1", "post_note")) is None:
        assert time.monotonic() < deadline, "the slot never came back"
        time.sleep(0.02)
    assert time.monotonic() - started >= 0.25
    assert permit is not None


def test_renew_pushes_the_expiry_and_fails_once_expired(client: redis.Redis, prefix: str) -> None:
    lim = limiter(client, prefix, Limits(per_tenant=1), ttl_s=30)
    permit = lim.acquire("t1", "send_email")
    assert permit is not None
    tenant_key, _ = lim.pool_keys("t1", "send_email")
    before = client.zscore(tenant_key, permit.id)
    assert lim.renew(permit)
    after = client.zscore(tenant_key, permit.id)
    assert before is not None and after is not None and after >= before
    lim.release(permit)
    assert not lim.renew(permit)


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    proxy.start()
    yield proxy
    proxy.stop()


def test_with_redis_down_it_allows_up_to_the_local_share(
    redis_proxy: TcpProxy, client: redis.Redis, prefix: str
) -> None:
    proxied = connect_redis(f"redis://{redis_proxy.url_netloc}/0", timeout_s=0.2)
    lim = limiter(proxied, prefix, Limits(per_tenant=8, default_per_tool=100), fallback_share=0.25)
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

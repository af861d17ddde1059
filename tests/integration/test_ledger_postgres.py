"""The ledger contract against PostgreSQL, and against the Redis cache of final outcomes in
front of it; then what only real servers can show: reconnects after a dropped connection, and
the cache answering correctly, and cheaply, while Redis is up and while it is cut off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, settings

from runcoord import db
from runcoord.effects.ledger import (
    Acquired,
    Busy,
    CachedLedger,
    Claim,
    EffectMeta,
    EffectState,
    Finished,
    InMemoryLedger,
    Ledger,
    LedgerMisconfigured,
    LedgerUnavailable,
    PostgresLedger,
    RedisGuard,
    RequestConflict,
    connect_redis,
)
from runcoord.errors import Fatal, Retriable
from tests.fake_time import FakeTime
from tests.ledger_contract import LEASE_S, LedgerContract, meta, new_key
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ledger_dsn(pg_dsn: str) -> str:
    db.migrate(pg_dsn)  # idempotent; other modules may have run it already
    return pg_dsn


class PostgresHarness:
    def __init__(self, dsn: str, app: str) -> None:
        self.dsn = dsn
        self.app = app
        self._opened: list[PostgresLedger] = []
        self._admin = psycopg.connect(dsn, autocommit=True)
        self.postgres = self.new_postgres()
        self.ledger: Ledger = self.postgres

    def new_postgres(self) -> PostgresLedger:
        ledger = PostgresLedger(self.dsn, application_name=self.app)
        self._opened.append(ledger)
        return ledger

    def new_ledger(self) -> Ledger:
        return self.new_postgres()

    def expire(self, key: str) -> None:
        self._admin.execute(
            "UPDATE effect_ledger SET lease_expires_at = now() - interval '1 ms'"
            " WHERE effect_key = %s AND state = 'claimed'",
            (key,),
        )

    def close(self) -> None:
        for ledger in self._opened:
            ledger.close()
        self._admin.close()


class CachedHarness(PostgresHarness):
    def __init__(self, dsn: str, app: str, redis_url: str) -> None:
        super().__init__(dsn, app)
        self.redis = connect_redis(redis_url, timeout_s=2.0)
        self.prefix = f"test:{app}:"
        self.cached = self._wrap(self.postgres)
        self.ledger = self.cached

    def _wrap(self, inner: Ledger) -> CachedLedger:
        return CachedLedger(inner, RedisGuard(self.redis), prefix=self.prefix)

    def new_ledger(self) -> Ledger:
        return self._wrap(self.new_postgres())

    def close(self) -> None:
        keys = list(self.redis.scan_iter(f"{self.prefix}*"))
        if keys:
            self.redis.delete(*keys)
        self.redis.close()
        super().close()


class TestPostgresLedger(LedgerContract):
    machine_settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

    @pytest.fixture
    def harness(self, ledger_dsn: str, unique: str) -> Iterator[PostgresHarness]:
        h = PostgresHarness(ledger_dsn, f"ledger-test-{unique}")
        yield h
        h.close()


class TestCachedLedger(LedgerContract):
    machine_settings = TestPostgresLedger.machine_settings

    @pytest.fixture
    def harness(self, ledger_dsn: str, redis_url: str, unique: str) -> Iterator[CachedHarness]:
        h = CachedHarness(ledger_dsn, f"ledger-test-{unique}", redis_url)
        yield h
        h.close()


# ---- reconnects ----------------------------------------------------------------------------


def test_a_dropped_connection_is_retriable_and_the_next_call_reconnects(
    ledger_dsn: str, unique: str
) -> None:
    app = f"ledger-drop-{unique}"
    key = new_key()
    with PostgresLedger(ledger_dsn, application_name=app) as ledger:
        assert isinstance(ledger.claim(key, meta(), "a", LEASE_S), Acquired)
        # What a PostgreSQL restart does to a client: its backend goes away under it.
        with psycopg.connect(ledger_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            ).fetchone()
        assert killed == (1,)
        with pytest.raises(LedgerUnavailable) as caught:
            ledger.mark_sent(key, 1)
        assert isinstance(caught.value, Retriable)
        # The executor's retry: same call, new connection, and mark_sent is idempotent.
        assert ledger.mark_sent(key, 1)
        assert ledger.complete(key, 1, EffectState.SUCCEEDED, {"ok": True})


def test_a_statement_stuck_on_a_lock_times_out_as_retriable(ledger_dsn: str) -> None:
    key = new_key()
    with PostgresLedger(ledger_dsn, statement_timeout_ms=300) as ledger:
        ledger.claim(key, meta(), "a", LEASE_S)
        with psycopg.connect(ledger_dsn) as blocker:  # not autocommit: holds the row lock
            blocker.execute("SELECT 1 FROM effect_ledger WHERE effect_key = %s FOR UPDATE", (key,))
            with pytest.raises(LedgerUnavailable):
                ledger.mark_sent(key, 1)
        assert ledger.mark_sent(key, 1), "unblocked, the retry goes through"


def test_an_unreachable_server_is_retriable() -> None:
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    with PostgresLedger(dead, connect_timeout_s=2) as ledger, pytest.raises(LedgerUnavailable):
        ledger.get(new_key())


def test_a_database_without_the_table_is_fatal(ledger_dsn: str) -> None:
    dsn = psycopg.conninfo.make_conninfo(ledger_dsn, options="-c search_path=no_such_schema")
    with PostgresLedger(dsn) as ledger:
        with pytest.raises(LedgerMisconfigured) as caught:
            ledger.get(new_key())
        assert isinstance(caught.value, Fatal)


def test_final_rows_cannot_be_rewritten_even_by_hand(ledger_dsn: str) -> None:
    key = new_key()
    with PostgresLedger(ledger_dsn) as ledger:
        ledger.claim(key, meta(), "a", LEASE_S)
        ledger.complete(key, 1, EffectState.SUCCEEDED, {"n": 1})
    with (
        psycopg.connect(ledger_dsn, autocommit=True) as admin,
        pytest.raises(psycopg.errors.IntegrityConstraintViolation),
    ):
        admin.execute(
            "UPDATE effect_ledger SET result = '{\"n\": 2}' WHERE effect_key = %s", (key,)
        )


# ---- the Redis cache of final outcomes ------------------------------------------------------


def _final_cached(client: redis.Redis, cached: CachedLedger, key: str) -> bool:
    return bool(client.exists(cached.final_key(key)))


class CountingRedis(redis.Redis):
    """A client that notes every command it sends."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)


class CountingLedger(InMemoryLedger):
    """The memory ledger, counting the claims that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    def claim(self, key: str, meta: EffectMeta, owner: str, lease_s: float) -> Claim:
        self.claims += 1
        return super().claim(key, meta, owner, lease_s)


@dataclass
class Counted:
    """A cache over a counting store, on a client counting what it sends to Redis."""

    client: CountingRedis
    cached: CachedLedger
    store: CountingLedger


@pytest.fixture
def counting(redis_url: str, unique: str) -> Iterator[Counted]:
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    client.sent = []
    store = CountingLedger()
    yield Counted(
        client, CachedLedger(store, RedisGuard(client), prefix=f"test:count-{unique}:"), store
    )
    client.sent = []
    for k in client.scan_iter(f"test:count-{unique}:*"):
        client.delete(k)
    client.close()


def test_a_first_delivery_costs_one_redis_read_and_no_write(
    counting: Counted,
) -> None:
    client, cached = counting.client, counting.cached
    key = new_key()
    assert isinstance(cached.claim(key, meta(), "a", LEASE_S), Acquired)
    assert cached.renew(key, 1, LEASE_S) and cached.mark_sent(key, 1)
    assert cached.complete(key, 1, EffectState.SUCCEEDED, {"ticket": "T-1"})
    assert client.sent == ["GET"], "one GET of the final key; no lease hint anywhere"
    other = new_key()
    cached.claim(other, meta(), "a", LEASE_S)
    assert cached.release(other, 1)
    assert isinstance(cached.claim(other, meta(), "b", LEASE_S), Acquired)
    assert client.sent == ["GET"] * 3
    assert cached.reclaim("a", "b") == [] and client.sent == ["GET"] * 3


def test_an_effect_in_flight_is_busy_by_the_store(
    counting: Counted,
) -> None:
    client, cached, store = counting.client, counting.cached, counting.store
    key = new_key()
    cached.claim(key, meta(), "a", LEASE_S)
    busy = cached.claim(key, meta(), "b", LEASE_S)
    assert isinstance(busy, Busy) and busy.owner == "a"
    assert store.claims == 2 and client.sent == ["GET", "GET"]
    assert not _final_cached(client, cached, key), "nothing cached for an effect in flight"


def test_a_cached_final_answer_is_returned_without_the_store(
    counting: Counted,
) -> None:
    client, cached, store = counting.client, counting.cached, counting.store
    key = new_key()
    cached.claim(key, meta(), "a", LEASE_S)
    cached.complete(key, 1, EffectState.SUCCEEDED, {"ticket": "T-1"})
    expected = Finished(key, EffectState.SUCCEEDED, {"ticket": "T-1"}, None)

    assert cached.claim(key, meta(), "b", LEASE_S) == expected  # a duplicate: from the store
    assert store.claims == 2 and client.sent == ["GET", "GET", "SET"]
    assert client.ttl(cached.final_key(key)) > 0, "cached with a TTL"
    client.sent = []
    for owner in ("c", "d", "e"):
        assert cached.claim(key, meta(), owner, LEASE_S) == expected
    assert store.claims == 2, "answered from Redis, not the store"
    assert client.sent == ["GET"] * 3, "one GET each, nothing written again"
    with pytest.raises(RequestConflict):
        cached.claim(key, meta(request="another request"), "f", LEASE_S)
    assert store.claims == 2, "the request hash is checked on the cached answer"
    assert cached.get(key) is not None and client.sent == ["GET"] * 4, "get reads the store"


def test_a_damaged_cache_entry_sends_the_claim_to_the_store(
    counting: Counted,
) -> None:
    client, cached, store = counting.client, counting.cached, counting.store
    key = new_key()
    cached.claim(key, meta(), "a", LEASE_S)
    cached.complete(key, 1, EffectState.FAILED, None, "tool said no")
    expected = Finished(key, EffectState.FAILED, None, "tool said no")
    for damaged in ("not json", '{"state": "claimed"}', '{"state": "nonsense"}', "[1]"):
        client.set(cached.final_key(key), damaged)
        before = store.claims
        assert cached.claim(key, meta(), "b", LEASE_S) == expected
        assert store.claims == before + 1
    assert cached.claim(key, meta(), "c", LEASE_S) == expected
    assert store.claims == before + 1, "the store's answer replaced the damaged entry"


def test_cache_serves_final_outcomes_and_falls_back_when_redis_is_cut(
    ledger_dsn: str, redis_url: str, redis_proxy: TcpProxy, unique: str
) -> None:
    direct = connect_redis(redis_url, timeout_s=2.0)
    proxied = connect_redis(f"redis://{redis_proxy.url_netloc}/0", timeout_s=0.2)
    guard = RedisGuard(proxied, cooldown_s=0.0)  # no breaker: every call tries Redis
    prefix = f"test:cut-{unique}:"
    done, busy = new_key(), new_key()
    with PostgresLedger(ledger_dsn) as pg:
        cached = CachedLedger(pg, guard, prefix=prefix)
        cached.claim(done, meta(), "a", LEASE_S)
        cached.complete(done, 1, EffectState.SUCCEEDED, {"ticket": "T-1"})
        assert not _final_cached(direct, cached, done), "a first delivery writes no Redis"
        expected = Finished(done, EffectState.SUCCEEDED, {"ticket": "T-1"}, None)
        assert cached.claim(done, meta(), "b", LEASE_S) == expected
        assert _final_cached(direct, cached, done), "the first duplicate filled the cache"
        assert isinstance(cached.claim(busy, meta(), "a", LEASE_S), Acquired)
        assert list(direct.scan_iter(f"{prefix}*")) == [cached.final_key(done)]

        redis_proxy.stop()  # Redis outage, mid-way: the store answers everything
        assert cached.claim(done, meta(), "c", LEASE_S) == expected
        assert isinstance(cached.claim(busy, meta(), "b", LEASE_S), Busy)
        fresh = new_key()
        assert cached.claim(fresh, meta(), "a", LEASE_S) == Acquired(fresh, 1, 1, False)
        assert cached.mark_sent(fresh, 1)
        assert cached.complete(fresh, 1, EffectState.FAILED, None, "tool said no")
        assert cached.claim(fresh, meta(), "b", LEASE_S) == Finished(
            fresh, EffectState.FAILED, None, "tool said no"
        )
        assert guard.call(lambda r: bool(r.ping()), False) is False, "Redis is really down"
        assert not _final_cached(direct, cached, fresh), "nothing reached Redis"

        redis_proxy.start()  # back: the cache fills in again
        assert cached.claim(fresh, meta(), "c", LEASE_S) == Finished(
            fresh, EffectState.FAILED, None, "tool said no"
        )
        assert _final_cached(direct, cached, fresh)
    for k in direct.scan_iter(f"{prefix}*"):
        direct.delete(k)
    direct.close()
    proxied.close()


def test_an_evicted_final_entry_only_sends_the_claim_to_postgres(
    ledger_dsn: str, redis_url: str, unique: str
) -> None:
    client = connect_redis(redis_url, timeout_s=2.0)
    key = new_key()
    with PostgresLedger(ledger_dsn) as pg:
        cached = CachedLedger(pg, RedisGuard(client), prefix=f"test:evict-{unique}:")
        cached.claim(key, meta(), "a", LEASE_S)
        cached.complete(key, 1, EffectState.SUCCEEDED, {"n": 1})
        expected = Finished(key, EffectState.SUCCEEDED, {"n": 1}, None)
        assert cached.claim(key, meta(), "b", LEASE_S) == expected
        client.delete(cached.final_key(key))  # Redis restarted empty, or evicted the key
        assert cached.claim(key, meta(), "c", LEASE_S) == expected
        assert _final_cached(client, cached, key)
        client.delete(cached.final_key(key))
    client.close()


def test_the_breaker_skips_redis_after_a_failure() -> None:
    dead = connect_redis("redis://127.0.0.1:1/0", timeout_s=0.2)
    now = FakeTime()
    guard = RedisGuard(dead, cooldown_s=5.0, clock=now)
    calls = []

    def ping(r: redis.Redis) -> bool:
        calls.append(1)
        return bool(r.ping())

    assert guard.call(ping, False) is False
    assert not guard.available
    started = time.monotonic()
    assert guard.call(ping, False) is False
    assert time.monotonic() - started < 0.05 and len(calls) == 1
    now.now = 5.0
    assert guard.available
    dead.close()

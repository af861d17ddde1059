"""The ledger contract against PostgreSQL, through the blocking adapter and through the one the
executors run on their event loop; then what only a real server can show: reconnects after a
dropped connection, statements stuck on a lock, a missing table, final rows kept final."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, settings

from runcoord import db
from runcoord.effects.ledger import (
    Acquired,
    AsyncPostgresLedger,
    EffectState,
    Ledger,
    LedgerMisconfigured,
    LedgerUnavailable,
    PostgresLedger,
    RedisGuard,
    connect_redis,
)
from runcoord.errors import Fatal, Retriable
from tests.fake_time import FakeTime
from tests.ledger_contract import LEASE_S, LedgerContract, meta, new_key

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


class Blocking:
    """An AsyncPostgresLedger driven from the contract's synchronous steps, on a loop of its
    own (the connection belongs to the loop that opened it)."""

    def __init__(self, ledger: AsyncPostgresLedger) -> None:
        self.inner = ledger
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self.inner, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(call(*args, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.inner.aclose())
        self.loop.close()


class AsyncHarness(PostgresHarness):
    def __init__(self, dsn: str, app: str) -> None:
        self._blocking: list[Blocking] = []
        super().__init__(dsn, app)
        self.ledger = self.new_ledger()

    def new_ledger(self) -> Ledger:
        ledger = Blocking(AsyncPostgresLedger(self.dsn, application_name=self.app))
        self._blocking.append(ledger)
        return ledger  # type: ignore[return-value]

    def close(self) -> None:
        for ledger in self._blocking:
            ledger.close()
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


class TestAsyncPostgresLedger(LedgerContract):
    machine_settings = TestPostgresLedger.machine_settings

    @pytest.fixture
    def harness(self, ledger_dsn: str, unique: str) -> Iterator[AsyncHarness]:
        h = AsyncHarness(ledger_dsn, f"ledger-test-{unique}")
        yield h
        h.close()


# ---- reconnects ----------------------------------------------------------------------------


@contextlib.contextmanager
def opened(adapter: str, dsn: str, **options: Any) -> Iterator[Any]:
    """A ledger of either adapter, called the same way."""
    if adapter == "blocking":
        with PostgresLedger(dsn, **options) as ledger:
            yield ledger
        return
    ledger = Blocking(AsyncPostgresLedger(dsn, **options))
    try:
        yield ledger
    finally:
        ledger.close()


ADAPTERS = pytest.mark.parametrize("adapter", ["blocking", "async"])


@ADAPTERS
def test_a_dropped_connection_is_retriable_and_the_next_call_reconnects(
    adapter: str, ledger_dsn: str, unique: str
) -> None:
    app = f"ledger-drop-{unique}"
    key = new_key()
    with opened(adapter, ledger_dsn, application_name=app) as ledger:
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


@ADAPTERS
def test_a_statement_stuck_on_a_lock_times_out_as_retriable(adapter: str, ledger_dsn: str) -> None:
    key = new_key()
    with opened(adapter, ledger_dsn, statement_timeout_ms=300) as ledger:
        ledger.claim(key, meta(), "a", LEASE_S)
        with psycopg.connect(ledger_dsn) as blocker:  # not autocommit: holds the row lock
            blocker.execute("SELECT 1 FROM effect_ledger WHERE effect_key = %s FOR UPDATE", (key,))
            with pytest.raises(LedgerUnavailable):
                ledger.mark_sent(key, 1)
        assert ledger.mark_sent(key, 1), "unblocked, the retry goes through"


@ADAPTERS
def test_an_unreachable_server_is_retriable(adapter: str) -> None:
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    with opened(adapter, dead, connect_timeout_s=2) as ledger, pytest.raises(LedgerUnavailable):
        ledger.get(new_key())


@ADAPTERS
def test_a_database_without_the_table_is_fatal(adapter: str, ledger_dsn: str) -> None:
    dsn = psycopg.conninfo.make_conninfo(ledger_dsn, options="-c search_path=no_such_schema")
    with opened(adapter, dsn) as ledger:
        with pytest.raises(LedgerMisconfigured) as caught:
            ledger.get(new_key())
        assert isinstance(caught.value, Fatal)


@ADAPTERS
def test_a_bad_lease_is_refused_before_any_connection(adapter: str) -> None:
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    with opened(adapter, dead, connect_timeout_s=2) as ledger, pytest.raises(ValueError):
        ledger.claim(new_key(), meta(), "a", 0)


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


# ---- Redis (the tool limiter's fleet and the API's limits go through RedisGuard) ------------


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

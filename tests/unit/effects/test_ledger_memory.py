"""The ledger contract against the in-memory adapter, plus what only a fake clock can show."""

from __future__ import annotations

import pytest

from runcoord.effects.ledger import Acquired, Busy, InMemoryLedger, Ledger
from tests.fake_time import FakeTime
from tests.ledger_contract import LedgerContract, meta, new_key


class MemoryHarness:
    def __init__(self) -> None:
        self.memory = InMemoryLedger()
        self.ledger: Ledger = self.memory

    def new_ledger(self) -> Ledger:
        return self.memory  # one process: every "executor" shares the store

    def expire(self, key: str) -> None:
        self.memory.expire_lease(key)


class TestInMemoryLedger(LedgerContract):
    @pytest.fixture
    def harness(self) -> MemoryHarness:
        return MemoryHarness()


def test_a_lease_lapses_when_its_time_is_up() -> None:
    clock = FakeTime(1_000_000.0)
    ledger = InMemoryLedger(clock)
    key = new_key()
    ledger.claim(key, meta(), "a", 10.0)
    clock.now += 9.5
    busy = ledger.claim(key, meta(), "b", 10.0)
    assert isinstance(busy, Busy) and busy.retry_after_s == pytest.approx(0.5)
    assert ledger.renew(key, 1, 10.0)
    clock.now += 9.5
    assert isinstance(ledger.claim(key, meta(), "b", 10.0), Busy)
    clock.now += 0.5  # exactly at expiry the lease is over
    assert ledger.claim(key, meta(), "b", 10.0) == Acquired(key, 2, 2, False)

"""LedgerGuard: a ledger that fails while a tool acts must not cost the tool's finished act."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runcoord.effects.guard import LeaseLost, LedgerGuard, Outcome, Sent
from runcoord.effects.ledger import Acquired, EffectState, InMemoryLedger
from runcoord.effects.ledger.errors import LedgerUnavailable
from tests.ledger_contract import meta, new_key

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FlakyLedger(InMemoryLedger):
    """Fails the next `renew` calls and `complete` calls it is told to, as PostgreSQL does
    while it restarts; then works again."""

    def __init__(self, renew_failures: int = 0, complete_failures: int = 0) -> None:
        super().__init__()
        self.renew_failures = renew_failures
        self.complete_failures = complete_failures
        self.renew_failed = threading.Event()

    def renew(self, key: str, token: int, lease_s: float) -> bool:
        if self.renew_failures:
            self.renew_failures -= 1
            self.renew_failed.set()
            raise LedgerUnavailable("connection refused")
        return super().renew(key, token, lease_s)

    def complete(self, key: str, token: int, state: EffectState, *args: object) -> bool:
        if self.complete_failures:
            self.complete_failures -= 1
            raise LedgerUnavailable("connection refused")
        return super().complete(key, token, state, *args)  # type: ignore[arg-type]


async def _act_until(ledger: FlakyLedger, key: str, guard: LedgerGuard) -> object:
    async def act(claim: Acquired, sent: Sent) -> Outcome:
        await sent()
        # The tool is slow: the heartbeat fires, and fails, while it works.
        await asyncio.wait_for(asyncio.to_thread(ledger.renew_failed.wait, 10), 10)
        return Outcome(EffectState.SUCCEEDED, {"ticket": "T-1"})

    return await guard.run(key, meta(), act)


async def test_a_failed_renewal_does_not_discard_the_finished_act() -> None:
    ledger, key = FlakyLedger(renew_failures=1), new_key()
    settled = await _act_until(ledger, key, LedgerGuard(ledger, "exec-1", lease_s=0.03))
    assert settled.state is EffectState.SUCCEEDED  # type: ignore[attr-defined]
    record = ledger.get(key)
    assert record is not None and record.state is EffectState.SUCCEEDED
    assert record.result == {"ticket": "T-1"}


async def test_a_store_that_fails_for_a_while_still_records_the_act() -> None:
    ledger, key = FlakyLedger(renew_failures=1, complete_failures=3), new_key()
    settled = await _act_until(ledger, key, LedgerGuard(ledger, "exec-1", lease_s=0.03))
    assert settled.state is EffectState.SUCCEEDED  # type: ignore[attr-defined]
    record = ledger.get(key)
    assert record is not None and record.state is EffectState.SUCCEEDED


class CountingLedger(InMemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.marks = 0

    def mark_sent(self, key: str, token: int) -> bool:
        self.marks += 1
        return super().mark_sent(key, token)


@pytest.mark.parametrize(("at_once", "marks"), [(False, 2), (True, 1)])
async def test_a_send_at_once_is_marked_by_the_claim_and_later_sends_by_mark_sent(
    at_once: bool, marks: int
) -> None:
    ledger, key = CountingLedger(), new_key()
    seen: list[bool] = []

    async def act(claim: Acquired, sent: Sent) -> Outcome:
        await sent()
        record = ledger.get(key)
        seen.append(record is not None and record.sent_at is not None)  # on record before
        await sent()  # a second send (after an unknown outcome) checks the lease again
        return Outcome(EffectState.SUCCEEDED, None)

    settled = await LedgerGuard(ledger, "exec-1").run(key, meta(), act, sends_at_once=at_once)
    assert settled.state is EffectState.SUCCEEDED
    assert seen == [True] and ledger.marks == marks


async def test_a_send_at_once_is_fenced_on_its_second_send_once_taken_over() -> None:
    ledger, key = CountingLedger(), new_key()

    async def act(claim: Acquired, sent: Sent) -> Outcome:
        await sent()
        ledger.expire_lease(key)  # our lease lapsed (a pause) and another executor took over
        assert isinstance(ledger.claim(key, meta(), "exec-2", 30.0), Acquired)
        await sent()
        return Outcome(EffectState.SUCCEEDED, None)

    with pytest.raises(LeaseLost):
        await LedgerGuard(ledger, "exec-1").run(key, meta(), act, sends_at_once=True)

"""The provider executor's create-run retries: bounded, and honest about what may exist."""

from __future__ import annotations

from typing import Any

import pytest

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import EffectState, InMemoryLedger
from runcoord.provider.errors import OutcomeUnknown, ProviderUnavailable
from runcoord.provider.executor import ProviderEffects
from runcoord.provider.port import ProviderRun
from tests.fake_time import FakeTime

pytestmark = pytest.mark.anyio


class Provider:
    """Answers create_run from a script of errors, then with a run."""

    name = "assistants"

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[bool] = []  # after_unknown_outcome of each call

    async def create_run(self, **kwargs: Any) -> tuple[ProviderRun, bool]:
        self.calls.append(kwargs["after_unknown_outcome"])
        if self.errors:
            error = self.errors.pop(0) if len(self.errors) > 1 else self.errors[0]
            raise error
        return ProviderRun("run_1", "queued", None, (), None, None, None), False


def unknown() -> OutcomeUnknown:
    return OutcomeUnknown("lost answer", operation="create_run", thread_id="th_1")


INTENT = it.CreateRunIntent(
    effect_key="ek1_c",
    run_id="r1",
    tenant="t1",
    thread_id="th_1",
    provider="assistants",
    assistant_id="asst_1",
    input="hi",
)


def effects(provider: Provider, time: FakeTime, ledger: InMemoryLedger) -> ProviderEffects:
    return ProviderEffects(
        {"assistants": provider},  # type: ignore[dict-item]
        LedgerGuard(ledger, "exec-1"),
        create_give_up_s=60,
        clock=time.clock,
        sleep=time.sleep,
    )


async def test_a_busy_thread_is_retried_with_backoff_then_the_create_fails() -> None:
    time, ledger = FakeTime(), InMemoryLedger()
    provider = Provider(ProviderUnavailable("thread th_1 is busy with run run_0"))
    (report,) = await effects(provider, time, ledger)(INTENT)
    assert isinstance(report, inp.EffectFailed) and report.kind == "create_run"
    assert "gave up after 6" in report.reason and "busy with run run_0" in report.reason
    assert time.slept[:4] == [0.2, 0.4, 0.8, 1.6] and max(time.slept) == 5.0
    assert 60 <= time.now < 66
    record = ledger.get("ek1_c")
    assert record is not None and record.state is EffectState.FAILED


async def test_giving_up_after_an_unknown_outcome_records_unknown_not_failed() -> None:
    time, ledger = FakeTime(), InMemoryLedger()
    provider = Provider(unknown(), ProviderUnavailable("503 on list"))
    (report,) = await effects(provider, time, ledger)(INTENT)
    assert isinstance(report, inp.EffectFailed)
    assert provider.calls[1:] and all(provider.calls[1:])  # reconciled on every later try
    record = ledger.get("ek1_c")
    assert record is not None and record.state is EffectState.UNKNOWN


async def test_a_provider_that_comes_back_in_time_creates_the_run() -> None:
    time, ledger = FakeTime(), InMemoryLedger()
    provider = Provider()
    answers: list[Exception] = [ProviderUnavailable("busy"), ProviderUnavailable("busy"), unknown()]

    async def then_ok(**kwargs: Any) -> tuple[ProviderRun, bool]:
        provider.calls.append(kwargs["after_unknown_outcome"])
        if answers:
            raise answers.pop(0)
        return ProviderRun("run_1", "queued", None, (), None, None, None), True

    provider.create_run = then_ok  # type: ignore[method-assign]
    (report,) = await effects(provider, time, ledger)(INTENT)
    assert isinstance(report, inp.RunCreated) and report.provider_run_id == "run_1"
    assert provider.calls == [False, False, False, True]  # after the lost answer: reconcile

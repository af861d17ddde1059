"""The provider executor's create-run: bounded retries, honest about what may exist.

``ProviderEffects`` drives the real adapters over the real SDK against the simulated
provider served over HTTP; the simulator's own faults produce every error (a 5xx before
applying, an answer lost after applying, a thread busy with another run), and its records
say what exists on the provider's side. The executor's backoff runs on a FakeTime, so
nothing waits for real: a 60 s give-up takes a few dozen requests and milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from openai import AsyncOpenAI

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import EffectState, InMemoryLedger
from runcoord.provider.executor import ProviderEffects
from tests.fake_time import FakeTime

from .conftest import Sim
from .world import World, assistants_world, responses_world

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]

GIVE_UP_S = 60
# A turn whose model works for a minute: it stays queued / in progress for the whole test
# (an Assistants run never reaches requires_action, so no steps listing muddles the counts).
SLOW: dict[str, Any] = {"latency_ms": 60_000}
# A 1 µs hold on every list request: the simulator's `fired` counter then counts listings.
COUNT_LISTS: dict[str, Any] = {"spike_rate": 1.0, "spike_ms": 0.001}


@pytest.fixture
def sdk(client: AsyncOpenAI) -> AsyncOpenAI:
    # The executor's retries are under test; the SDK's own retries of reads (a 5xx on a
    # listing) would sleep for real between them.
    return client.with_options(max_retries=0)


@pytest.fixture
async def assistants(sdk: AsyncOpenAI, sim: Sim) -> World:
    return await assistants_world(sdk, sim)


@pytest.fixture
async def responses(sdk: AsyncOpenAI, sim: Sim) -> World:
    return await responses_world(sdk, sim)


@pytest.fixture(params=["assistants", "responses"])
async def world(request: pytest.FixtureRequest, sdk: AsyncOpenAI, sim: Sim) -> World:
    if request.param == "assistants":
        return await assistants_world(sdk, sim)
    return await responses_world(sdk, sim)


def create_intent(world: World, run_id: str = "r1", **changes: str) -> it.CreateRunIntent:
    fields: dict[str, Any] = {
        "effect_key": f"ek-{run_id}-create",
        "run_id": run_id,
        "tenant": "t1",
        "thread_id": world.thread_id,
        "provider": world.provider.name,
        "assistant_id": world.assistant_id,
        "input": f"turn {run_id}",
        "metadata": {"sim_script": json.dumps(SLOW)},
    }
    return it.CreateRunIntent(**{**fields, **changes})


def effects(
    world: World,
    ledger: InMemoryLedger,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
    owner: str = "exec-1",
) -> ProviderEffects:
    return ProviderEffects(
        {world.provider.name: world.provider},
        LedgerGuard(ledger, owner),
        create_give_up_s=GIVE_UP_S,
        clock=clock,
        sleep=sleep,
    )


def on(world: World, time: FakeTime, ledger: InMemoryLedger) -> ProviderEffects:
    return effects(world, ledger, time.sleep, time.clock)


def provider_runs(sim: Sim, run_id: str) -> list[dict[str, Any]]:
    """The provider runs (first responses) the simulator made for our run id."""
    return [r for r in sim.records()["runs"] if r["our_run_id"] == run_id and not r["follow_up"]]


def fired(sim: Sim) -> dict[str, int]:
    """How often each of the simulator's faults fired, by ``<endpoint class>.<fault>``."""
    result: dict[str, int] = sim.admin.get("/faults").json()["fired"]
    return result


def state_of(ledger: InMemoryLedger, intent: it.CreateRunIntent) -> EffectState:
    record = ledger.get(intent.effect_key)
    assert record is not None
    return record.state


class Timeline(FakeTime):
    """A FakeTime whose ``at[n]`` runs after the executor's n-th sleep: the world changes
    while the executor backs off (a few real milliseconds for the simulator to act)."""

    def __init__(self, at: dict[int, Callable[[], Awaitable[None]]]) -> None:
        super().__init__()
        self.at = at

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        change = self.at.get(len(self.slept))
        if change is not None:
            await change()


# -- it goes through ---------------------------------------------------------------------


async def test_a_create_makes_one_provider_run_and_a_redelivery_reuses_it(
    world: World, sim: Sim
) -> None:
    time, ledger = FakeTime(), InMemoryLedger()
    intent = create_intent(world)
    (report,) = await on(world, time, ledger)(intent)
    (run,) = provider_runs(sim, "r1")
    assert isinstance(report, inp.RunCreated)
    assert (report.provider_run_id, report.reconciled) == (run["id"], False)
    assert report.status in ("queued", "in_progress") and time.slept == []
    assert state_of(ledger, intent) is EffectState.SUCCEEDED

    (again,) = await on(world, time, ledger)(intent)  # redelivered: the ledger answers
    assert isinstance(again, inp.RunCreated)
    assert (again.provider_run_id, again.reconciled) == (run["id"], True)
    assert sim.records()["counts"]["creates_by_run_id"] == {"r1": 1}


async def test_a_rejected_create_fails_at_once(assistants: World, sim: Sim) -> None:
    time, ledger = FakeTime(), InMemoryLedger()
    intent = create_intent(assistants, assistant_id="asst_missing")
    (report,) = await on(assistants, time, ledger)(intent)
    assert isinstance(report, inp.EffectFailed) and report.kind == "create_run"
    assert "HTTP 404" in report.reason and "asst_missing" in report.reason
    assert time.slept == []  # a 4xx is not retried
    assert state_of(ledger, intent) is EffectState.FAILED
    assert sim.records()["runs"] == []


# -- an unavailable provider: bounded retries ----------------------------------------------


async def test_a_busy_thread_is_retried_with_backoff_then_the_create_fails(
    assistants: World, sim: Sim
) -> None:
    # The previous turn's run still holds the thread: every create is refused (400), and
    # the adapter, finding no run of ours, says the provider is unavailable.
    blocker, _ = await assistants.create("r0", script=SLOW)
    time, ledger = FakeTime(), InMemoryLedger()
    intent = create_intent(assistants)
    (report,) = await on(assistants, time, ledger)(intent)
    assert isinstance(report, inp.EffectFailed) and report.kind == "create_run"
    assert "gave up after 6" in report.reason
    assert f"busy with run {blocker.provider_run_id}" in report.reason
    assert time.slept[:4] == [0.2, 0.4, 0.8, 1.6] and max(time.slept) == 5.0
    assert GIVE_UP_S <= time.now < GIVE_UP_S + 6
    assert state_of(ledger, intent) is EffectState.FAILED
    # Nothing was created for our turn: the thread still has only the other turn's run.
    assert sim.records()["counts"]["creates_by_run_id"] == {"r0": 1}


async def test_a_provider_that_answers_5xx_to_every_create_is_given_up_on_as_unknown(
    world: World, sim: Sim
) -> None:
    # A 5xx may come after the change was applied, so each is an unknown outcome; nothing
    # was created, but from outside nobody can say so: UNKNOWN, never FAILED.
    sim.faults({"endpoints": {"create": {"error_rate": 1.0, "error_status": 503}}})
    time, ledger = FakeTime(), InMemoryLedger()
    intent = create_intent(world)
    (report,) = await on(world, time, ledger)(intent)
    assert isinstance(report, inp.EffectFailed) and report.kind == "create_run"
    assert "gave up after 6" in report.reason and "HTTP 503" in report.reason
    assert GIVE_UP_S <= time.now < GIVE_UP_S + 6
    assert state_of(ledger, intent) is EffectState.UNKNOWN
    assert provider_runs(sim, "r1") == []
    # Each try reconciled (found nothing) and sent the create once more: one 5xx per sleep.
    assert fired(sim) == {"create.error": len(time.slept)}


# -- a lost answer: reconcile, never create twice ----------------------------------------


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_giving_up_after_an_unknown_outcome_records_unknown_not_failed(
    world: World, sim: Sim, lost_mode: str
) -> None:
    # The create is applied and its answer lost; from then on the provider cannot be read
    # (every listing is a 503), so the executor cannot find out whether its run exists.
    sim.faults(
        {
            "endpoints": {
                "create": {"lost_rate": 1.0, "lost_mode": lost_mode},
                "list": {"error_rate": 1.0, "error_status": 503},
            }
        }
    )
    time, ledger = FakeTime(), InMemoryLedger()
    intent = create_intent(world)
    (report,) = await on(world, time, ledger)(intent)
    assert isinstance(report, inp.EffectFailed) and report.kind == "create_run"
    assert "gave up after 6" in report.reason and "HTTP 503" in report.reason
    assert state_of(ledger, intent) is EffectState.UNKNOWN  # the run may exist: it does
    (run,) = provider_runs(sim, "r1")
    assert run["response_lost"] == lost_mode
    # Every later try reconciled first (a listing, refused) and never sent the create
    # again: the create rule would have lost a resent create's answer too.
    assert fired(sim) == {"create.lost": 1, "list.error": len(time.slept) - 1}


async def test_a_provider_that_comes_back_in_time_creates_the_run(
    assistants: World, sim: Sim
) -> None:
    # Busy, busy (the previous turn's run holds the thread), then the thread is free but
    # the create's answer is lost; the next try must find that run, not make another.
    blocker, _ = await assistants.create("r0", script=SLOW)
    sim.faults({"endpoints": {"list": COUNT_LISTS}})

    async def free_the_thread_and_lose_the_next_answer() -> None:
        await assistants.cancel(blocker)
        await assistants.until(blocker, "cancelled")
        sim.faults({"endpoints": {"list": COUNT_LISTS, "create": {"lost_rate": 1.0}}})

    time, ledger = Timeline({2: free_the_thread_and_lose_the_next_answer}), InMemoryLedger()
    intent = create_intent(assistants)
    (report,) = await on(assistants, time, ledger)(intent)

    (run,) = provider_runs(sim, "r1")
    assert isinstance(report, inp.RunCreated)
    assert (report.provider_run_id, report.reconciled) == (run["id"], True)
    assert run["response_lost"] == "500"
    assert time.slept == [0.2, 0.4, 0.8]
    assert state_of(ledger, intent) is EffectState.SUCCEEDED
    assert sim.records()["counts"]["creates_by_run_id"] == {"r0": 1, "r1": 1}
    # The tries' after_unknown_outcome were False, False, False, True: the two busy tries
    # listed once each (after their 400), the lost one not at all, the last one listed
    # first and found the run without sending the create again (it would have been lost).
    assert fired(sim) == {"list.spike": 3, "create.lost": 1}


async def test_after_an_executor_died_mid_create_the_next_one_reconciles_first(
    assistants: World, sim: Sim
) -> None:
    sim.faults({"endpoints": {"create": {"lost_rate": 1.0, "lost_mode": "drop"}}})
    ledger = InMemoryLedger()
    intent = create_intent(assistants)

    class Died(Exception):
        pass

    async def die(seconds: float) -> None:
        raise Died  # the executor dies in its backoff, after the lost create

    with pytest.raises(Died):
        await effects(assistants, ledger, die, FakeTime().clock)(intent)
    assert state_of(ledger, intent) is EffectState.CLAIMED
    ledger.expire_lease(intent.effect_key)  # its lease lapses; another executor takes over

    time = FakeTime()
    (report,) = await effects(assistants, ledger, time.sleep, time.clock, "exec-2")(intent)
    (run,) = provider_runs(sim, "r1")
    assert isinstance(report, inp.RunCreated)
    assert (report.provider_run_id, report.reconciled) == (run["id"], True)
    assert time.slept == []
    assert state_of(ledger, intent) is EffectState.SUCCEEDED
    # The ledger said an earlier attempt had sent, so the first try looked before sending.
    assert fired(sim) == {"create.lost": 1}


async def test_a_lost_responses_create_is_unreconcilable_and_recorded_unknown(
    responses: World, sim: Sim
) -> None:
    # The Responses API cannot name the response a lost create made: the executor must
    # stop at once rather than start the turn a second time.
    sim.faults({"endpoints": {"create": {"lost_rate": 1.0}}})
    time, ledger = FakeTime(), InMemoryLedger()
    intent = create_intent(responses)
    (report,) = await on(responses, time, ledger)(intent)
    assert isinstance(report, inp.EffectFailed) and report.kind == "create_run"
    assert "cannot name that response" in report.reason
    assert time.slept == [0.2]  # one retry, which reconciled; no waiting for the give-up
    assert state_of(ledger, intent) is EffectState.UNKNOWN
    (run,) = provider_runs(sim, "r1")
    assert run["response_lost"] == "500"
    assert fired(sim) == {"create.lost": 1}


# -- watches -----------------------------------------------------------------------------


def of_watch(world: World, number: int) -> dict[str, Any]:
    """The fields a watch's intents (its start, its end) share."""
    return {
        "effect_key": f"ek-r1-watch:{number}",
        "run_id": "r1",
        "tenant": "t1",
        "thread_id": world.thread_id,
        "provider": world.provider.name,
        "watch": number,
    }


def watch_intent(world: World, run: Any, number: int) -> it.ObserveRunIntent:
    return it.ObserveRunIntent(
        **of_watch(world, number),
        provider_run_id=run.provider_run_id,
        since_status=run.status,
        since_step=run.step_id,
        timeout_ms=30_000,
    )


async def a_watch_in_flight(world: World, number: int) -> tuple[Any, Any, asyncio.Future[Any]]:
    """A provider executor's effects, a run waiting on a step, and watch ``number`` of it in
    flight: the step waits on us, so the watch polls on and reports nothing for 30 s."""
    effects = on(world, FakeTime(), InMemoryLedger())
    waiting = await world.waiting(script={"steps": [{"tool_calls": [{"name": "x"}]}]})
    watch = asyncio.ensure_future(effects(watch_intent(world, waiting, number)))
    await asyncio.sleep(0.05)
    assert not watch.done()
    return effects, waiting, watch


async def test_a_newer_watch_of_a_run_ends_the_older_one_without_a_report(
    assistants: World,
) -> None:
    effects, waiting, older = await a_watch_in_flight(assistants, 5)
    await assistants.cancel(waiting)  # a change the newer watch reports
    (report,) = await effects(watch_intent(assistants, waiting, 7))
    assert isinstance(report, inp.RunObserved) and report.watch == 7 and report.changed
    assert await asyncio.wait_for(older, 1) == []


async def test_an_older_watch_delivered_while_a_newer_one_is_in_flight_is_not_started(
    assistants: World,
) -> None:
    effects, waiting, newer = await a_watch_in_flight(assistants, 9)
    assert await asyncio.wait_for(effects(watch_intent(assistants, waiting, 8)), 1) == []
    assert not newer.done()  # the newer one watches on
    newer.cancel()


def end_watch_intent(world: World, number: int) -> it.EndWatchIntent:
    return it.EndWatchIntent(**of_watch(world, number) | {"effect_key": f"ek-r1-end:{number}"})


async def test_an_end_of_watch_ends_the_watch_it_names_without_a_report(
    assistants: World,
) -> None:
    effects, _, watching = await a_watch_in_flight(assistants, 5)
    assert await effects(end_watch_intent(assistants, 5)) == []
    assert await asyncio.wait_for(watching, 1) == []


async def test_an_end_of_an_older_watch_leaves_the_newer_one_watching(
    assistants: World,
) -> None:
    effects, waiting, newer = await a_watch_in_flight(assistants, 9)
    assert await effects(end_watch_intent(assistants, 8)) == []
    await asyncio.sleep(0.05)
    assert not newer.done()
    await assistants.cancel(waiting)  # the newer watch still reports what changes
    (report,) = await asyncio.wait_for(newer, 5)
    assert isinstance(report, inp.RunObserved) and report.watch == 9 and report.changed

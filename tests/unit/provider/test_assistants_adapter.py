"""What only the Assistants adapter does, through the real SDK against the simulator."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from openai import AsyncOpenAI

from runcoord.provider import (
    AssistantsProvider,
    OutcomeUnknown,
    ProviderUnavailable,
)

from .conftest import ASSISTANTS_MODULE, FAST, Sim
from .world import World, assistants_world

pytestmark = ASSISTANTS_MODULE


@pytest.fixture
async def world(client: AsyncOpenAI, sim: Sim) -> World:
    return await assistants_world(client, sim)


async def test_the_run_carries_our_run_id_and_the_input(world: World, client: AsyncOpenAI) -> None:
    run, _ = await world.create()
    assert run.expires_at_ms is not None and run.expires_at_ms % 1000 == 0
    (created,) = world.sim.records()["runs"]
    assert created["metadata"] == {"runcoord_run_id": "r-1"}
    # The input went in with the run (additional_messages), not as a message of its own.
    (message,) = (await client.beta.threads.messages.list(world.thread_id)).data
    assert message.role == "user" and message.run_id is None
    assert message.content[0].type == "text" and message.content[0].text.value == "turn r-1"


async def test_the_step_id_is_the_run_steps_id(world: World, client: AsyncOpenAI) -> None:
    run = await world.waiting()
    steps = await client.beta.threads.runs.steps.list(
        run.provider_run_id, thread_id=world.thread_id
    )
    assert [s.id for s in steps.data if s.type == "tool_calls"] == [run.step_id]


async def test_the_turns_metadata_goes_on_the_run_under_ours(world: World) -> None:
    async def create() -> bool:
        _, reconciled = await world.provider.create_run(
            run_id="r-1",
            thread_id=world.thread_id,
            assistant_id=world.assistant_id,
            input="hi",
            effect_key="ek",
            metadata={"tenant": "t1", "runcoord_run_id": "not-ours"},
        )
        return reconciled

    assert await create() is False
    (created,) = world.sim.records()["runs"]
    assert created["metadata"] == {"tenant": "t1", "runcoord_run_id": "r-1"}
    assert await create() is True  # ... so the run is still found by our id


async def test_creating_twice_makes_one_provider_run(world: World) -> None:
    first, reconciled_first = await world.create()
    # Even without after_unknown_outcome: the thread is busy with ours, and it is found.
    second, reconciled_second = await world.create()
    assert (reconciled_first, reconciled_second) == (False, True)
    assert second.provider_run_id == first.provider_run_id
    assert world.sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


async def test_a_reconciled_create_reports_the_waiting_step(world: World) -> None:
    run = await world.waiting()
    found, reconciled = await world.create()
    assert reconciled and (found.status, found.step_id) == ("requires_action", run.step_id)
    assert found.tool_calls == run.tool_calls


async def test_reconcile_pages_through_older_runs(world: World, client: AsyncOpenAI) -> None:
    paged = World(
        AssistantsProvider(client, backoff=FAST, page_size=2),
        world.sim,
        world.thread_id,
        world.assistant_id,
    )
    for run_id in ("r-old", "r-0", "r-1", "r-2"):
        run = await paged.waiting(run_id)
        outcome = await paged.submit(run)
        await paged.until(await paged.after(run, outcome), "completed")
    # The oldest of four, on the second page (after an unknown outcome, so it looks first).
    found, reconciled = await paged.create("r-old", after_unknown_outcome=True)
    assert reconciled and found.status == "completed"
    assert world.sim.records()["counts"]["creates_by_run_id"]["r-old"] == 1


async def test_a_thread_busy_with_another_run_is_retriable(world: World) -> None:
    other = await world.waiting("r-1")
    with pytest.raises(ProviderUnavailable, match=f"busy with run {other.provider_run_id}"):
        await world.create("r-2")
    assert world.sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_a_lost_create_is_found_not_repeated(world: World, lost_mode: str) -> None:
    world.sim.faults({"endpoints": {"create": {"lost_rate": 1.0, "lost_mode": lost_mode}}})
    with pytest.raises(OutcomeUnknown) as caught:
        await world.create()
    assert caught.value.operation == "create_run" and caught.value.effect_key == "ek-create-r-1"
    world.sim.faults({})
    run, reconciled = await world.create(after_unknown_outcome=True)
    assert reconciled and run.status in ("queued", "in_progress", "requires_action")
    records = world.sim.records()
    assert records["counts"]["creates_by_run_id"] == {"r-1": 1}
    assert records["runs"][0]["response_lost"] == lost_mode


async def test_a_5xx_before_the_create_is_applied_creates_once(world: World) -> None:
    world.sim.faults({"endpoints": {"create": {"error_rate": 1.0, "error_status": 503}}})
    with pytest.raises(OutcomeUnknown):  # from outside, a 5xx may or may not have applied
        await world.create()
    world.sim.faults({})
    run, reconciled = await world.create(after_unknown_outcome=True)
    assert not reconciled and run.status == "queued"
    assert world.sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


async def test_submitting_to_an_expired_run_is_run_moved_on(world: World) -> None:
    script = {"steps": [{"tool_calls": [{"name": "create_ticket"}]}], "expires_after_s": 0.1}
    waiting = await world.waiting(script=script)
    expired = await world.until(waiting, "expired")
    assert expired.expires_at_ms is not None and expired.tool_calls == ()
    outcome = await world.submit(waiting)
    assert outcome.outcome == "run_moved_on"
    assert outcome.detail is not None and "expired" in outcome.detail
    assert world.sim.records()["counts"]["accepted_by_step"] == {}


async def test_cancel_goes_through_cancelling(world: World) -> None:
    run = await world.waiting()
    assert await world.cancel(run) == "cancelling"
    cancelled = await world.until(run, "cancelled")
    assert cancelled.terminal and await world.cancel(run) == "cancelled"
    outcome = await world.submit(run)
    assert outcome.outcome == "run_moved_on"


async def test_an_unreachable_provider_is_retriable_and_nothing_was_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"  # bound, not listening
        async with AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as sdk:
            provider = AssistantsProvider(sdk, backoff=FAST)
            with pytest.raises(ProviderUnavailable, match="ConnectError"):
                await provider.create_run(
                    run_id="r", thread_id="thread_x", assistant_id="a", input="i", effect_key="e"
                )


async def test_a_submission_held_by_a_latency_spike_is_answered_by_one_beside_it(
    world: World,
) -> None:
    """A run takes one set of outputs per step, so the adapter sends the submission again
    beside a slow one (after the policy's hedge_ms, 500 ms). The first request is held for
    3 s before the provider handles it; the second answers the step, and the first, once
    let go, is refused (the run no longer waits on that step)."""
    waiting = await world.waiting()
    assert waiting.step_id is not None
    world.sim.faults(
        {"endpoints": {"submit": {"spike_rate": 1.0, "spike_ms": 3000, "max_faults": 1}}}
    )
    began = time.monotonic()
    outcome = await world.submit(waiting)
    answered_s = time.monotonic() - began
    assert outcome.outcome == "submitted"
    assert answered_s < 2.5, f"answered after {answered_s:.1f} s: the held request's answer"
    counts = world.sim.records()["counts"]
    assert counts["accepted_by_step"] == {waiting.step_id: 1}
    # The held request, let go, meets a step already answered: refused, never applied.
    deadline = time.monotonic() + 10
    while len(submissions := world.sim.records()["submissions"]) < 2:
        assert time.monotonic() < deadline, "the held submission was never handled"
        await asyncio.sleep(0.05)
    assert [s["accepted"] for s in submissions] == [True, False]

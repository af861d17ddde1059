"""The Assistants adapter's streamed writes (``observe="stream"``): a create or a submission
sent with ``stream: true`` follows the run until the model stops working and returns that
state, through the real SDK against the simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest
from openai import AsyncOpenAI

from runcoord.provider import AssistantsProvider, OutcomeUnknown

from .conftest import ASSISTANTS_MODULE, FAST, Sim
from .world import TWO_STEPS, World, assistants_world

pytestmark = ASSISTANTS_MODULE


@pytest.fixture
async def world(client: AsyncOpenAI, sim: Sim) -> World:
    return await assistants_world(client, sim, "stream")


async def test_a_create_returns_the_first_step_with_the_run_steps_id(
    world: World, client: AsyncOpenAI
) -> None:
    run, reconciled = await world.create(script=TWO_STEPS)
    assert (run.status, reconciled) == ("requires_action", False)
    assert [c.name for c in run.tool_calls] == ["create_ticket"]
    steps = await client.beta.threads.runs.steps.list(
        run.provider_run_id, thread_id=world.thread_id
    )
    assert [s.id for s in steps.data if s.type == "tool_calls"] == [run.step_id]
    # What a poll says of the same step (which also carries the poll-after hint).
    assert replace(await world.observe(run.provider_run_id), poll_after_ms=None) == run


async def test_a_submission_returns_where_the_run_went(world: World) -> None:
    first, _ = await world.create(script=TWO_STEPS)
    outcome = await world.submit(first)
    second = outcome.seen
    assert outcome.outcome == "submitted" and second is not None
    assert second.status == "requires_action" and second.step_id not in (None, first.step_id)
    assert [c.name for c in second.tool_calls] == ["create_ticket", "send_email"]
    assert replace(await world.observe(first.provider_run_id), poll_after_ms=None) == second

    last = await world.submit(second)
    assert last.outcome == "submitted" and last.seen is not None
    assert last.seen.status == "completed" and last.seen.terminal
    assert world.sim.records()["counts"]["accepted_by_step"] == {
        first.step_id: 1,
        second.step_id: 1,
    }


async def test_a_model_slower_than_the_follow_is_left_to_the_watch(
    client: AsyncOpenAI, sim: Sim
) -> None:
    world = await assistants_world(client, sim, "stream")
    world.provider = AssistantsProvider(client, backoff=FAST, observe="stream", follow_ms=50)
    run, _ = await world.create(script={**TWO_STEPS, "latency_ms": 400})
    assert run.status in ("queued", "in_progress")
    assert (await world.until(run, "requires_action")).step_id is not None


async def test_a_stream_that_breaks_after_the_run_leaves_it_to_the_watch(world: World) -> None:
    # Every event after the opening ones is dropped: the run exists, its news is lost.
    world.sim.faults({"endpoints": {"create": {"stream_drop_rate": 1.0}}})
    run, reconciled = await world.create(script=TWO_STEPS)
    world.sim.faults({})
    assert (run.status, reconciled) == ("queued", False)
    assert (await world.until(run, "requires_action")).step_id is not None


async def test_a_submission_whose_answer_breaks_before_any_event_is_unknown(
    world: World,
) -> None:
    first, _ = await world.create(script=TWO_STEPS)
    world.sim.faults({"endpoints": {"submit": {"lost_rate": 1.0, "lost_mode": "drop"}}})
    with pytest.raises(OutcomeUnknown):
        await world.submit(first)
    world.sim.faults({})
    # It was applied; the 200 alone never counts as proof, the reconciliation does.
    verdict = await world.reconcile(first)
    assert verdict is not None and verdict.outcome == "already_submitted"

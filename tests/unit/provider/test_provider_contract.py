"""What every provider adapter does, run against each through the real SDK and the simulator.

Each test gets a fresh thread (Assistants) or conversation (Responses) on the simulator and
the adapter for it. Adapter-specific behaviour lives in test_assistants_adapter.py and
test_responses_adapter.py.
"""

from __future__ import annotations

import json

import pytest
from openai import AsyncOpenAI

from runcoord.domain.model import Output
from runcoord.provider import OutcomeUnknown, Unreconcilable

from .conftest import Sim
from .world import TWO_STEPS, World, assistants_world, responses_world

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]


# Each adapter twice: polling, and streaming (Responses: watching by the event stream;
# Assistants: creating and submitting with stream=true, following the run).
@pytest.fixture(params=["assistants", "assistants-stream", "responses", "responses-stream"])
async def world(request: pytest.FixtureRequest, client: AsyncOpenAI, sim: Sim) -> World:
    observe = "stream" if request.param.endswith("stream") else "poll"
    if request.param.startswith("assistants"):
        return await assistants_world(client, sim, observe)
    return await responses_world(client, sim, observe)


async def test_a_turn_from_create_to_completed(world: World) -> None:
    run, reconciled = await world.create(script=TWO_STEPS)
    assert not reconciled
    # A streamed create follows the run to its first step; the others answer at once.
    assert run.status == ("requires_action" if world.follows else "queued")

    first = await world.until(run, "requires_action")
    (call,) = first.tool_calls
    assert call.name == "create_ticket" and json.loads(call.arguments) == {"title": "a"}
    again = await world.observe(first.provider_run_id)
    assert again.step_id == first.step_id  # stable across polls
    assert again.poll_after_ms == 5  # the simulator's openai-poll-after-ms

    outcome = await world.submit(first)
    assert outcome.outcome == "submitted"
    second = await world.until(await world.after(first, outcome), "requires_action")
    assert second.step_id not in (None, first.step_id)
    assert [c.name for c in second.tool_calls] == ["create_ticket", "send_email"]

    outcome = await world.submit(second)
    assert outcome.outcome == "submitted"
    done = await world.until(await world.after(second, outcome), "completed")
    assert done.terminal and done.detail is None and done.tool_calls == ()

    counts = world.sim.records()["counts"]
    assert counts["creates_by_run_id"] == {"r-1": 1}
    assert counts["accepted_by_step"] == {first.step_id: 1, second.step_id: 1}


async def test_a_repeated_create_never_makes_a_second_provider_run(world: World) -> None:
    first, _ = await world.create()
    if world.provider.name == "assistants":
        again, reconciled = await world.create(after_unknown_outcome=True)
        assert reconciled and again.provider_run_id == first.provider_run_id
    else:
        # The Responses API cannot name the response the first attempt made; it says so.
        with pytest.raises(Unreconcilable):
            await world.create(after_unknown_outcome=True)
    assert world.sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_a_lost_submission_is_reconciled_as_already_submitted(
    world: World, lost_mode: str
) -> None:
    run = await world.waiting()
    world.sim.faults({"endpoints": {"submit": {"lost_rate": 1.0, "lost_mode": lost_mode}}})
    with pytest.raises(OutcomeUnknown) as caught:
        await world.submit(run)
    unknown = caught.value
    assert (unknown.operation, unknown.provider_run_id, unknown.step_id) == (
        "submit_outputs",
        run.provider_run_id,
        run.step_id,
    )
    assert unknown.effect_key == f"ek-submit-{run.step_id}"
    world.sim.faults({})

    verdict = await world.reconcile(run)
    assert verdict is not None and verdict.outcome == "already_submitted"
    # Sending again anyway is still safe: the provider refuses, the adapter says why.
    again = await world.submit(run)
    assert again.outcome == "already_submitted"

    records = world.sim.records()
    assert records["counts"]["accepted_by_step"] == {run.step_id: 1}
    (accepted,) = [s for s in records["submissions"] if s["accepted"]]
    assert accepted["response_lost"] == lost_mode


async def test_a_5xx_before_the_submission_is_applied_is_sent_again(world: World) -> None:
    run = await world.waiting()
    world.sim.faults({"endpoints": {"submit": {"error_rate": 1.0}}})
    with pytest.raises(OutcomeUnknown):  # from outside, a 5xx may or may not have applied
        await world.submit(run)
    world.sim.faults({})
    verdict = await world.reconcile(run)
    assert verdict is not None and verdict.outcome == "not_submitted"
    outcome = await world.submit(run)
    assert outcome.outcome == "submitted"
    assert (await world.until(await world.after(run, outcome), "completed")).terminal
    assert world.sim.records()["counts"]["accepted_by_step"] == {run.step_id: 1}


async def test_outputs_for_other_calls_are_rejected_and_the_step_still_waits(
    world: World,
) -> None:
    run = await world.waiting()
    assert run.step_id is not None
    outcome = await world.provider.submit_outputs(
        thread_id=world.thread_id,
        provider_run_id=run.provider_run_id,
        step_id=run.step_id,
        outputs=(Output("call_nope", "x", False, "tool", "h"),),
        effect_key="ek",
    )
    assert outcome.outcome == "rejected"
    assert outcome.detail is not None and "call_nope" in outcome.detail
    still = await world.observe(run.provider_run_id)
    assert (still.status, still.step_id) == ("requires_action", run.step_id)
    assert world.sim.records()["counts"]["accepted_by_step"] == {}


async def test_cancelling_a_waiting_run(world: World) -> None:
    run = await world.waiting()
    status = await world.cancel(run)
    assert status in ("cancelling", "cancelled")
    # Cancelling again is not an error: the run's status is the answer.
    assert await world.cancel(run) in ("cancelling", "cancelled")


async def test_cancelling_a_working_run(world: World) -> None:
    run, _ = await world.create(script={"latency_ms": 60_000})
    run = await world.until(run, "in_progress")
    assert await world.cancel(run) in ("cancelling", "cancelled")
    assert (await world.until(run, "cancelled")).terminal


async def test_a_failed_run_says_why(world: World) -> None:
    run, _ = await world.create(script={"final": {"status": "failed"}})
    failed = await world.until(run, "failed")
    assert failed.terminal and failed.detail is not None
    assert failed.detail.startswith("server_error: ")


async def test_an_incomplete_run_says_why(world: World) -> None:
    run, _ = await world.create(script={"final": {"status": "incomplete", "message": "cut"}})
    incomplete = await world.until(run, "incomplete")
    assert incomplete.detail is not None and incomplete.detail.startswith("incomplete: max_")


async def test_a_watch_that_sees_no_change_times_out(world: World) -> None:
    run, _ = await world.create(script={"latency_ms": 60_000})
    run = await world.until(run, "in_progress")
    seen, changed = await world.provider.watch(
        thread_id=world.thread_id,
        provider_run_id=run.provider_run_id,
        since_status="in_progress",
        since_step=None,
        timeout_ms=50,
    )
    assert (seen.status, changed) == ("in_progress", False)


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_a_conversations_thread_is_created_once_per_key(world: World, lost_mode: str) -> None:
    """Our conversation's provider thread: a create whose answer was lost is OutcomeUnknown,
    and asking again with the same key gets the thread the lost create made, not a second."""
    before = len(world.sim.records()["containers"])
    world.sim.faults({"endpoints": {"other": {"lost_rate": 1.0, "lost_mode": lost_mode}}})
    with pytest.raises(OutcomeUnknown) as caught:
        await world.provider.create_thread(
            conversation="t1/c-1", effect_key="ek-thread-c1", metadata={"runcoord_conv": "c-1"}
        )
    assert caught.value.effect_key == "ek-thread-c1"
    world.sim.faults({})
    again = await world.provider.create_thread(
        conversation="t1/c-1", effect_key="ek-thread-c1", metadata={"runcoord_conv": "c-1"}
    )
    other = await world.provider.create_thread(
        conversation="t1/c-2", effect_key="ek-thread-c2", metadata={"runcoord_conv": "c-2"}
    )
    created = world.sim.records()["containers"][before:]
    assert [c["id"] for c in created] == [again, other]  # the lost one is `again`
    assert created[0]["replays"] == 1

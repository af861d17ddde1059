"""The Responses adapter's streamed writes (``observe="stream"``): the turn's opening
response and each follow-up are made with ``stream: true`` (and ``background: true``), and
followed until the model stops working; that state is returned. Real SDK, the simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from runcoord.provider import OutcomeUnknown, ResponsesProvider, Unreconcilable
from runcoord.provider.sse import ServerSentEvent

from .conftest import FAST, Sim
from .world import RESPONSE_TOOLS, TWO_STEPS, World, responses_world

pytestmark = pytest.mark.anyio


@pytest.fixture
async def world(client: AsyncOpenAI, sim: Sim) -> World:
    return await responses_world(client, sim, "stream")


async def test_a_create_returns_the_first_step(world: World) -> None:
    run, reconciled = await world.create(script=TWO_STEPS)
    assert (run.status, reconciled) == ("requires_action", False)
    assert run.step_id == run.provider_run_id
    assert [c.name for c in run.tool_calls] == ["create_ticket"]
    # What a read of the same response says (which also carries the poll-after hint).
    assert replace(await world.observe(run.provider_run_id), poll_after_ms=None) == run


async def test_a_submission_returns_the_follow_up_where_it_went(world: World) -> None:
    first, _ = await world.create(script=TWO_STEPS)
    outcome = await world.submit(first)
    second = outcome.seen
    assert outcome.outcome == "submitted" and second is not None
    assert second.provider_run_id == outcome.new_provider_run_id != first.provider_run_id
    assert second.status == "requires_action" and second.step_id == second.provider_run_id
    assert [c.name for c in second.tool_calls] == ["create_ticket", "send_email"]
    assert replace(await world.observe(second.provider_run_id), poll_after_ms=None) == second

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
    world = await responses_world(client, sim, "stream")
    world.provider = ResponsesProvider(
        client, tools=RESPONSE_TOOLS, backoff=FAST, observe="stream", follow_ms=50
    )
    run, _ = await world.create(script={**TWO_STEPS, "latency_ms": 400})
    assert run.status in ("queued", "in_progress")
    outcome = await world.submit(await world.until(run, "requires_action"))
    assert outcome.outcome == "submitted" and outcome.seen is None
    assert outcome.new_provider_run_id is not None


async def test_a_stream_that_breaks_after_the_response_leaves_it_to_the_watch(
    world: World,
) -> None:
    # Every event is dropped: the response was made (the write was applied), its news lost.
    world.sim.faults({"endpoints": {"create": {"stream_drop_rate": 1.0}}})
    with pytest.raises(OutcomeUnknown):  # not even its first event: applied or not?
        await world.create(script=TWO_STEPS)
    world.sim.faults({})
    # The conversation shows the input arrived: a second create is refused, not sent.
    with pytest.raises(Unreconcilable, match="cannot name that response"):
        await world.create(script=TWO_STEPS, after_unknown_outcome=True)


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


async def test_the_simulator_streams_only_background_responses(client: AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    with pytest.raises(openai.BadRequestError, match="only background responses"):
        await client.responses.create(
            model="gpt-4o", conversation=conversation.id, input="hi", stream=True
        )


async def test_a_stream_that_breaks_after_its_first_event_costs_only_the_sighting(
    client: AsyncOpenAI,
) -> None:
    provider = ResponsesProvider(client, tools=RESPONSE_TOOLS, observe="stream")

    async def broken() -> AsyncIterator[ServerSentEvent]:
        working = {"id": "resp_1", "status": "in_progress"}
        event = {"type": "response.in_progress", "sequence_number": 2, "response": working}
        yield ServerSentEvent("response.in_progress", json.dumps(event))
        raise httpx.ReadError("connection reset mid-stream")

    assert await provider._follow_events(broken()) is None

"""What only the Responses adapter does, through the real SDK against the simulator."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from openai import AsyncOpenAI

from runcoord.provider import (
    OutcomeUnknown,
    ProviderRejected,
    ResponsesProvider,
    Unreconcilable,
)
from runcoord.provider.responses_mapping import CANCELLED_OUTPUT

from .conftest import FAST, Sim
from .world import RESPONSE_TOOLS, TWO_STEPS, World, responses_world

pytestmark = pytest.mark.anyio


@pytest.fixture
async def world(client: AsyncOpenAI, sim: Sim) -> World:
    return await responses_world(client, sim)


async def test_a_turn_is_a_chain_of_responses(world: World, client: AsyncOpenAI) -> None:
    run = await world.waiting()
    # The step is the response that asked; its calls are named by call_id.
    assert run.step_id == run.provider_run_id and run.step_id.startswith("resp_")
    response = await client.responses.retrieve(run.provider_run_id)
    # The tools ride on every response (sent untransformed, as extra_body).
    assert [getattr(t, "name", None) for t in response.tools] == [t["name"] for t in RESPONSE_TOOLS]
    assert [c.id for c in run.tool_calls] == [
        o.call_id for o in response.output if o.type == "function_call"
    ]
    outcome = await world.submit(run)
    assert outcome.outcome == "submitted"
    assert outcome.new_provider_run_id not in (None, run.provider_run_id)
    await world.until(await world.after(run, outcome), "completed")

    opening, follow_up = world.sim.records()["runs"]
    assert opening["metadata"] == {"runcoord_run_id": "r-1", "runcoord_step": "input"}
    assert follow_up["metadata"] == {"runcoord_run_id": "r-1", "runcoord_step": run.step_id}
    assert (opening["follow_up"], follow_up["follow_up"]) == (False, True)
    assert (opening["container_id"], follow_up["container_id"]) == (world.thread_id,) * 2


async def test_the_turns_metadata_rides_on_every_response(world: World) -> None:
    run = await world.waiting(script=TWO_STEPS)
    await world.submit(run)
    scripts = [r["metadata"].get("sim_script") for r in world.sim.records()["runs"]]
    assert len(scripts) == 2 and scripts[0] is not None and scripts[0] == scripts[1]


async def test_every_response_is_made_as_configured(client: AsyncOpenAI, sim: Sim) -> None:
    """The body goes as extra_body (the SDK's transform of typed parameters costs more than
    the rest of the request): the opening response and the follow-up carry it all."""
    base = await responses_world(client, sim)
    provider = ResponsesProvider(
        client, tools=RESPONSE_TOOLS, instructions="Be brief.", backoff=FAST
    )
    world = World(provider, sim, base.thread_id, base.assistant_id)
    run = await world.waiting(script=TWO_STEPS)
    outcome = await world.submit(run)
    assert outcome.new_provider_run_id is not None
    for response_id in (run.provider_run_id, outcome.new_provider_run_id):
        made = await client.responses.retrieve(response_id)
        assert (made.model, made.instructions, made.background) == (
            base.assistant_id,
            "Be brief.",
            True,
        )
        assert [t.name for t in made.tools] == ["create_ticket"]  # type: ignore[union-attr]


async def test_parallel_tool_calls_off_asks_one_call_per_step(
    client: AsyncOpenAI, sim: Sim
) -> None:
    base = await responses_world(client, sim)
    provider = ResponsesProvider(
        client, tools=RESPONSE_TOOLS, parallel_tool_calls=False, backoff=FAST
    )
    world = World(provider, sim, base.thread_id, base.assistant_id)
    run = await world.waiting(script=TWO_STEPS)
    run = await world.until(await world.after(run, await world.submit(run)), "requires_action")
    assert [c.name for c in run.tool_calls] == ["create_ticket"]  # "b", alone
    run = await world.until(await world.after(run, await world.submit(run)), "requires_action")
    assert [c.name for c in run.tool_calls] == ["send_email"]


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_a_lost_create_cannot_be_named_and_is_not_repeated(
    world: World, lost_mode: str
) -> None:
    world.sim.faults({"endpoints": {"create": {"lost_rate": 1.0, "lost_mode": lost_mode}}})
    with pytest.raises(OutcomeUnknown):
        await world.create()
    world.sim.faults({})
    with pytest.raises(Unreconcilable, match="cannot name"):
        await world.create(after_unknown_outcome=True)
    records = world.sim.records()
    assert records["counts"]["creates_by_run_id"] == {"r-1": 1}
    assert records["runs"][0]["response_lost"] == lost_mode


async def test_a_5xx_before_the_create_is_applied_creates_once(world: World) -> None:
    world.sim.faults({"endpoints": {"create": {"error_rate": 1.0}}})
    with pytest.raises(OutcomeUnknown):
        await world.create()
    world.sim.faults({})
    # The conversation does not hold our input: nothing was created, so creating is safe.
    run, reconciled = await world.create(after_unknown_outcome=True)
    assert not reconciled and run.status == "queued"
    assert world.sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


async def test_a_lost_submission_leaves_the_follow_up_unnamed(world: World) -> None:
    run = await world.waiting()
    world.sim.faults({"endpoints": {"submit": {"lost_rate": 1.0}}})
    with pytest.raises(OutcomeUnknown):
        await world.submit(run)
    world.sim.faults({})
    verdict = await world.reconcile(run)
    assert verdict is not None and verdict.outcome == "already_submitted"
    assert verdict.new_provider_run_id is None
    assert verdict.detail is not None and "cannot be named" in verdict.detail


async def test_outputs_partly_in_the_conversation_are_not_sent(
    world: World, client: AsyncOpenAI
) -> None:
    two_calls = {"steps": [TWO_STEPS["steps"][1]]}
    run = await world.waiting(script=two_calls)
    first = run.tool_calls[0].id
    await client.conversations.items.create(
        world.thread_id,
        items=[{"type": "function_call_output", "call_id": first, "output": "elsewhere"}],
    )
    outcome = await world.submit(run)
    assert outcome.outcome == "rejected"
    assert outcome.detail is not None and first in outcome.detail
    (only,) = world.sim.records()["submissions"]  # the one made elsewhere; ours never left
    assert only["tool_call_ids"] == [first]


async def test_an_unanswered_step_blocks_the_conversations_next_turn(world: World) -> None:
    await world.waiting("r-1")
    with pytest.raises(ProviderRejected, match="No tool output found"):
        await world.create("r-2")


async def test_cancelling_a_waiting_turn_closes_its_calls(
    world: World, client: AsyncOpenAI
) -> None:
    run = await world.waiting("r-1")
    assert await world.cancel(run) == "cancelled"
    items = await client.conversations.items.list(world.thread_id, order="desc")
    outputs = [i for i in items.data if i.type == "function_call_output"]
    assert [o.output for o in outputs] == [CANCELLED_OUTPUT] * len(run.tool_calls)
    # Once: cancelling again finds them closed and adds nothing.
    assert await world.cancel(run) == "cancelled"
    again = await client.conversations.items.list(world.thread_id, order="desc")
    assert len(again.data) == len(items.data)
    # The step can no longer take outputs, and the conversation takes the next turn.
    assert (await world.submit(run)).outcome == "run_moved_on"
    assert (await world.waiting("r-2")).status == "requires_action"
    assert world.sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1, "r-2": 1}


async def test_cancelling_an_ended_turn_returns_its_status(world: World) -> None:
    run, _ = await world.create(script={"steps": [], "final": {"message": "ok"}})
    done = await world.until(run, "completed")
    assert await world.cancel(done) == "completed"


async def test_a_steps_scans_read_its_newest_items_not_the_whole_conversation(
    client: AsyncOpenAI, sim: Sim
) -> None:
    """Behind a long history, a look at a waiting step and the check before its submission
    each read one small page: outputs come after their calls, so the scan stops at them."""
    base = await responses_world(client, sim)
    limits: list[str | None] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/items") and request.method == "GET":
            limits.append(request.url.params.get("limit"))

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    async with AsyncOpenAI(
        base_url=sim.base_url + "/v1", api_key="sk-test", http_client=http
    ) as sdk:
        # No hedging: a slow answer on a loaded machine would add a second request.
        unhedged = dataclasses.replace(FAST, hedge_ms=None)
        world = World(
            ResponsesProvider(sdk, tools=RESPONSE_TOOLS, backoff=unhedged),
            sim,
            base.thread_id,
            base.assistant_id,
        )
        for turn in range(4):  # history: each turn adds its input, calls, outputs and reply
            run = await world.waiting(f"r-{turn}")
            await world.until(await world.after(run, await world.submit(run)), "completed")
        history = await sdk.conversations.items.list(base.thread_id, limit=100)
        assert len(history.data) > 12
        run = await world.waiting("r-last")
        limits.clear()
        assert (await world.observe(run.provider_run_id)).step_id == run.step_id
        assert (await world.submit(run)).outcome == "submitted"
    assert limits == ["8", "8"]  # one page each: 2 per call and 6 more


async def test_a_scan_pages_on_when_the_answer_lies_deeper(client: AsyncOpenAI, sim: Sim) -> None:
    base = await responses_world(client, sim)
    provider = ResponsesProvider(client, tools=RESPONSE_TOOLS, backoff=FAST, page_size=1)
    world = World(provider, sim, base.thread_id, base.assistant_id)
    run = await world.waiting()
    assert (await world.reconcile(run)).outcome == "not_submitted"  # type: ignore[union-attr]
    outcome = await world.submit(run)
    await world.until(await world.after(run, outcome), "completed")
    # Newest first: the reply, the output, then the call, one item per page.
    verdict = await world.reconcile(run)
    assert verdict is not None and verdict.outcome == "already_submitted"

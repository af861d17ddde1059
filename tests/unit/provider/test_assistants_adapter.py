"""The Assistants adapter against the simulated provider over HTTP, through the real SDK."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from coordinator.domain.model import Output
from coordinator.provider import (
    AssistantsProvider,
    OutcomeUnknown,
    ProviderRun,
    ProviderUnavailable,
)

from .conftest import FAST, Sim

# The SDK marks its Assistants methods deprecated (OpenAI sunset its hosted Assistants API;
# assistants.* say just "deprecated"). The adapter targets Assistants-compatible servers on
# purpose, so exactly those warnings are let through.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "create_ticket",
            "parameters": {
                "type": "object",
                "properties": {"title": {"type": "string"}},
                "required": ["title"],
            },
        },
    }
]


@pytest.fixture
def provider(client: AsyncOpenAI) -> AssistantsProvider:
    return AssistantsProvider(client, backoff=FAST)


class Turn:
    """An assistant and a thread on the simulator, and the adapter to run turns on them."""

    def __init__(self, provider: AssistantsProvider, assistant_id: str, thread_id: str) -> None:
        self.provider = provider
        self.assistant_id = assistant_id
        self.thread_id = thread_id

    @property
    def ids(self) -> tuple[str, str]:
        return self.assistant_id, self.thread_id

    async def create(self, run_id: str = "r-1", **kwargs: Any) -> tuple[ProviderRun, bool]:
        return await self.provider.create_run(
            run_id=run_id,
            thread_id=self.thread_id,
            assistant_id=self.assistant_id,
            input="open a ticket",
            effect_key=f"ek-create-{run_id}",
            **kwargs,
        )

    async def until(self, run: ProviderRun, *statuses: str) -> ProviderRun:
        """Watch until the run reaches one of ``statuses`` (fails after a few seconds)."""
        for _ in range(100):
            if run.status in statuses:
                return run
            run, _ = await self.provider.watch(
                thread_id=self.thread_id,
                provider_run_id=run.provider_run_id,
                since_status=run.status,
                since_step=run.step_id,
                timeout_ms=2_000,
            )
        raise AssertionError(f"run {run.provider_run_id} is {run.status}, not in {statuses}")

    async def submit(self, run: ProviderRun, text: str = "T-1") -> Any:
        assert run.step_id is not None
        return await self.provider.submit_outputs(
            thread_id=self.thread_id,
            provider_run_id=run.provider_run_id,
            step_id=run.step_id,
            outputs=outputs_for(run, text),
            effect_key=f"ek-submit-{run.step_id}",
        )

    async def reconcile(self, run: ProviderRun, text: str = "T-1") -> Any:
        assert run.step_id is not None
        return await self.provider.reconcile_submission(
            thread_id=self.thread_id,
            provider_run_id=run.provider_run_id,
            step_id=run.step_id,
            outputs=outputs_for(run, text),
        )


def outputs_for(run: ProviderRun, text: str) -> tuple[Output, ...]:
    return tuple(Output(c.id, text, False, "tool", "hash") for c in run.tool_calls)


async def new_turn(
    client: AsyncOpenAI, provider: AssistantsProvider, script: dict[str, Any] | None = None
) -> Turn:
    metadata = {"sim_script": json.dumps(script)} if script is not None else None
    assistant = await client.beta.assistants.create(model="gpt-4o", tools=TOOLS, metadata=metadata)
    thread = await client.beta.threads.create()
    return Turn(provider, assistant.id, thread.id)


@pytest.fixture
async def turn(client: AsyncOpenAI, provider: AssistantsProvider) -> AsyncIterator[Turn]:
    yield await new_turn(client, provider)


async def test_a_turn_from_create_to_completed(turn: Turn, sim: Sim) -> None:
    run, reconciled = await turn.create()
    assert (run.status, reconciled, run.step_id) == ("queued", False, None)
    assert run.expires_at_ms is not None and run.expires_at_ms % 1000 == 0

    run = await turn.until(run, "requires_action")
    (call,) = run.tool_calls
    assert call.name == "create_ticket" and json.loads(call.arguments) == {"title": "sample"}
    assert run.step_id is not None and run.step_id.startswith("step_")
    assert run.poll_after_ms == 5
    again = await turn.provider.retrieve(
        thread_id=turn.thread_id, provider_run_id=run.provider_run_id
    )
    assert again.step_id == run.step_id  # stable across polls

    outcome = await turn.submit(run)
    assert (outcome.outcome, outcome.new_provider_run_id) == ("submitted", None)
    done = await turn.until(run, "completed")
    assert done.provider_run_id == run.provider_run_id and done.detail is None

    records = sim.records()
    assert records["counts"]["creates_by_run_id"] == {"r-1": 1}
    assert records["counts"]["accepted_by_step"] == {run.step_id: 1}
    (created,) = records["runs"]
    assert created["metadata"] == {"runcoord_run_id": "r-1"}


async def test_the_input_goes_in_with_the_run(turn: Turn, client: AsyncOpenAI) -> None:
    run, _ = await turn.create()
    messages = await client.beta.threads.messages.list(turn.thread_id)
    (message,) = messages.data
    assert message.role == "user"
    assert message.content[0].type == "text" and message.content[0].text.value == "open a ticket"
    assert run.status == "queued"


async def test_the_turns_metadata_goes_on_the_run_under_ours(turn: Turn, sim: Sim) -> None:
    tags = {"tenant": "t1", "runcoord_run_id": "not-ours"}
    await turn.create(metadata=tags)
    (created,) = sim.records()["runs"]
    assert created["metadata"] == {"tenant": "t1", "runcoord_run_id": "r-1"}
    # ... and the run is still found by our id.
    assert (await turn.create(metadata=tags))[1] is True


async def test_creating_twice_makes_one_provider_run(turn: Turn, sim: Sim) -> None:
    first, reconciled_first = await turn.create()
    second, reconciled_second = await turn.create()
    assert (reconciled_first, reconciled_second) == (False, True)
    assert second.provider_run_id == first.provider_run_id
    assert sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


async def test_a_reconciled_create_reports_the_waiting_step(turn: Turn) -> None:
    run = await turn.until((await turn.create())[0], "requires_action")
    found, reconciled = await turn.create()
    assert reconciled and (found.status, found.step_id) == ("requires_action", run.step_id)


async def test_reconcile_pages_through_older_runs(
    client: AsyncOpenAI, turn: Turn, sim: Sim
) -> None:
    paged = Turn(AssistantsProvider(client, backoff=FAST, page_size=2), *turn.ids)
    first, _ = await paged.create("r-old")
    await paged.until(await _answered(paged, first), "completed")
    for i in range(3):
        run, _ = await paged.create(f"r-{i}")
        await paged.until(await _answered(paged, run), "completed")
    found, reconciled = await paged.create("r-old")  # the oldest of four: on the second page
    assert reconciled and found.provider_run_id == first.provider_run_id
    assert found.status == "completed"
    assert sim.records()["counts"]["creates_by_run_id"]["r-old"] == 1


async def _answered(turn: Turn, run: ProviderRun) -> ProviderRun:
    waiting = await turn.until(run, "requires_action")
    assert (await turn.submit(waiting)).outcome == "submitted"
    return waiting


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_a_lost_create_is_found_not_repeated(turn: Turn, sim: Sim, lost_mode: str) -> None:
    sim.faults({"endpoints": {"create": {"lost_rate": 1.0, "lost_mode": lost_mode}}})
    with pytest.raises(OutcomeUnknown) as caught:
        await turn.create()
    assert caught.value.operation == "create_run" and caught.value.effect_key == "ek-create-r-1"
    sim.faults({})
    run, reconciled = await turn.create(after_unknown_outcome=True)
    assert reconciled and run.status in ("queued", "in_progress", "requires_action")
    records = sim.records()
    assert records["counts"]["creates_by_run_id"] == {"r-1": 1}
    assert records["runs"][0]["response_lost"] == lost_mode


async def test_a_5xx_before_the_create_is_applied_creates_nothing(turn: Turn, sim: Sim) -> None:
    sim.faults({"endpoints": {"create": {"error_rate": 1.0, "error_status": 503}}})
    with pytest.raises(OutcomeUnknown):  # from outside, a 5xx may or may not have applied
        await turn.create()
    sim.faults({})
    run, reconciled = await turn.create(after_unknown_outcome=True)
    assert not reconciled and run.status == "queued"
    assert sim.records()["counts"]["creates_by_run_id"] == {"r-1": 1}


@pytest.mark.parametrize("lost_mode", ["500", "drop"])
async def test_a_lost_submission_is_reconciled_as_already_submitted(
    turn: Turn, sim: Sim, lost_mode: str
) -> None:
    run = await turn.until((await turn.create())[0], "requires_action")
    sim.faults({"endpoints": {"submit": {"lost_rate": 1.0, "lost_mode": lost_mode}}})
    with pytest.raises(OutcomeUnknown) as caught:
        await turn.submit(run)
    unknown = caught.value
    assert (unknown.operation, unknown.provider_run_id, unknown.step_id) == (
        "submit_outputs",
        run.provider_run_id,
        run.step_id,
    )
    sim.faults({})
    verdict = await turn.reconcile(run)
    assert verdict is not None and verdict.outcome == "already_submitted"
    # Sending again anyway is still safe: the provider refuses, the adapter says why.
    assert (await turn.submit(run)).outcome == "already_submitted"
    counts = sim.records()["counts"]
    assert counts["accepted_by_step"] == {run.step_id: 1}
    assert counts["submissions_by_run"][run.provider_run_id] == {
        "submissions": 2,
        "accepted": 1,
        "rejected": 1,
    }
    assert (await turn.until(run, "completed")).status == "completed"


async def test_a_5xx_before_the_submission_is_applied_is_resent(turn: Turn, sim: Sim) -> None:
    run = await turn.until((await turn.create())[0], "requires_action")
    sim.faults({"endpoints": {"submit": {"error_rate": 1.0}}})
    with pytest.raises(OutcomeUnknown):
        await turn.submit(run)
    sim.faults({})
    verdict = await turn.reconcile(run)
    assert verdict is not None and verdict.outcome == "not_submitted"
    assert (await turn.submit(run)).outcome == "submitted"
    assert sim.records()["counts"]["accepted_by_step"] == {run.step_id: 1}


async def test_outputs_for_the_wrong_calls_are_rejected(turn: Turn) -> None:
    run = await turn.until((await turn.create())[0], "requires_action")
    assert run.step_id is not None
    outcome = await turn.provider.submit_outputs(
        thread_id=turn.thread_id,
        provider_run_id=run.provider_run_id,
        step_id=run.step_id,
        outputs=(Output("call_nope", "x", False, "tool", "h"),),
        effect_key="ek",
    )
    assert outcome.outcome == "rejected" and outcome.detail is not None
    assert "call_nope" in outcome.detail
    still = await turn.provider.retrieve(
        thread_id=turn.thread_id, provider_run_id=run.provider_run_id
    )
    assert (still.status, still.step_id) == ("requires_action", run.step_id)


async def test_submitting_to_an_expired_run_is_run_moved_on(
    client: AsyncOpenAI, provider: AssistantsProvider, sim: Sim
) -> None:
    script = {"steps": [{"tool_calls": [{"name": "create_ticket"}]}], "expires_after_s": 0.1}
    turn = await new_turn(client, provider, script)
    waiting = await turn.until((await turn.create())[0], "requires_action")
    expired = await turn.until(waiting, "expired")
    assert expired.expires_at_ms is not None and expired.tool_calls == ()
    outcome = await turn.submit(waiting)
    assert outcome.outcome == "run_moved_on"
    assert outcome.detail is not None and "expired" in outcome.detail
    assert sim.records()["counts"]["accepted_by_step"] == {}


async def test_cancel(turn: Turn) -> None:
    run = await turn.until((await turn.create())[0], "requires_action")
    status = await turn.provider.cancel(
        thread_id=turn.thread_id, provider_run_id=run.provider_run_id
    )
    assert status == "cancelling"
    cancelled = await turn.until(run, "cancelled")
    assert cancelled.terminal
    # Cancelling an ended run is not an error: its status is the answer.
    again = await turn.provider.cancel(
        thread_id=turn.thread_id, provider_run_id=run.provider_run_id
    )
    assert again == "cancelled"


async def test_a_failed_run_says_why(client: AsyncOpenAI, provider: AssistantsProvider) -> None:
    turn = await new_turn(client, provider, {"final": {"status": "failed"}})
    failed = await turn.until((await turn.create())[0], "failed")
    assert failed.detail is not None and failed.detail.startswith("server_error: ")


async def test_a_watch_that_sees_no_change_times_out(
    client: AsyncOpenAI, provider: AssistantsProvider
) -> None:
    turn = await new_turn(client, provider, {"latency_ms": 60_000})
    run = await turn.until((await turn.create())[0], "in_progress")
    seen, changed = await provider.watch(
        thread_id=turn.thread_id,
        provider_run_id=run.provider_run_id,
        since_status="in_progress",
        since_step=None,
        timeout_ms=50,
    )
    assert (seen.status, changed) == ("in_progress", False)


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

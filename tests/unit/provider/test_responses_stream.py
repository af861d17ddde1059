"""The Responses adapter watching by the event stream (``observe="stream"``), through the
real SDK against the simulator. The contract suite runs in this mode too; here is what only
streaming does: one request per watch, resuming after a drop, replays, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import Acquired, EffectMeta, InMemoryLedger, request_hash
from runcoord.provider import ProviderRun, ProviderUnavailable, ResponsesProvider
from runcoord.provider.port import RUN_ID_KEY, STEP_KEY, Turn
from runcoord.submitter.executor import Submissions

from .conftest import FAST, Sim
from .world import RESPONSE_TOOLS, TWO_STEPS, World, outputs_for

pytestmark = pytest.mark.anyio

SLOW_STEP = {"steps": [{"tool_calls": [{"name": "create_ticket", "arguments": {"title": "a"}}]}]}


class Requests:
    """What the SDK sent: (path, query) of every request, via an httpx event hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, list[str]]]] = []

    async def __call__(self, request: httpx.Request) -> None:
        url = urlsplit(str(request.url))
        self.seen.append((url.path, parse_qs(url.query)))

    def streams(self, response_id: str) -> list[str | None]:
        """The ``starting_after`` of each stream opened on the response (None: from 0)."""
        return [
            query.get("starting_after", [None])[0]
            for path, query in self.seen
            if path.endswith(f"/responses/{response_id}") and query.get("stream") == ["true"]
        ]

    def conversation_reads(self, conversation_id: str) -> int:
        return sum(1 for path, _ in self.seen if path.endswith(f"/{conversation_id}/items"))

    def plain_reads(self, response_id: str) -> int:
        return sum(
            1
            for path, query in self.seen
            if path.endswith(f"/responses/{response_id}") and "stream" not in query
        )


@pytest.fixture
def requests() -> Requests:
    return Requests()


@pytest.fixture
async def stream_client(sim: Sim, requests: Requests) -> AsyncIterator[AsyncOpenAI]:
    # The executors' transport (aiohttp, runcoord/provider/client.py), counting requests.
    http = DefaultAioHttpClient(event_hooks={"request": [requests]})
    async with AsyncOpenAI(
        base_url=sim.base_url + "/v1", api_key="sk-test", http_client=http, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
async def world(stream_client: AsyncOpenAI, sim: Sim) -> World:
    conversation = await stream_client.conversations.create()
    # Watches are what is tested here: the writes do not follow the response they make
    # (that is test_responses_writes.py), so a watch begins on a working response.
    provider = ResponsesProvider(
        stream_client, tools=RESPONSE_TOOLS, backoff=FAST, observe="stream", follow_ms=0
    )
    return World(provider, sim, conversation.id, "gpt-4o")


async def watch(
    world: World, run: ProviderRun, timeout_ms: int = 5_000, since: ProviderRun | None = None
) -> tuple[ProviderRun, bool]:
    since = since or run
    return await world.provider.watch(
        thread_id=world.thread_id,
        provider_run_id=run.provider_run_id,
        since_status=since.status,
        since_step=since.step_id,
        timeout_ms=timeout_ms,
    )


async def test_the_mode_is_checked(stream_client: AsyncOpenAI) -> None:
    with pytest.raises(ValueError, match="observe"):
        ResponsesProvider(stream_client, tools=[], observe="push")  # type: ignore[arg-type]


async def test_one_stream_carries_a_watch_to_the_step(world: World, requests: Requests) -> None:
    run, _ = await world.create(script={**SLOW_STEP, "latency_ms": 200})
    began = time.monotonic()
    step, changed = await watch(world, run)
    assert changed and step.status == "requires_action" and step.step_id == run.provider_run_id
    assert [c.name for c in step.tool_calls] == ["create_ticket"]
    assert time.monotonic() - began < 2  # the step is 200 ms of model time away
    # One stream, no polling of the response; the conversation is read once (is the step
    # already answered?), as retrieve does.
    assert requests.streams(run.provider_run_id) == [None]
    assert requests.plain_reads(run.provider_run_id) == 0


async def test_a_response_finished_before_the_watch_answers_at_once(world: World) -> None:
    run, _ = await world.create(script=SLOW_STEP)
    await world.until(run, "requires_action")  # it is done now
    began = time.monotonic()
    step, changed = await watch(world, run)  # since queued: the replay shows the step
    assert changed and step.status == "requires_action"
    assert time.monotonic() - began < 1


async def test_a_waiting_step_is_polled_not_streamed(world: World, requests: Requests) -> None:
    """A step is a finished response: only the conversation can show it answered."""
    step = await world.waiting(script=SLOW_STEP)
    opened = len(requests.streams(step.provider_run_id))
    seen, changed = await watch(world, step, timeout_ms=150)
    assert (seen.status, seen.step_id, changed) == ("requires_action", step.step_id, False)
    assert len(requests.streams(step.provider_run_id)) == opened
    assert requests.plain_reads(step.provider_run_id) >= 1


async def test_a_follow_ups_working_start_is_not_news(world: World, requests: Requests) -> None:
    """Watched since the step it answers, the follow-up's queued and in_progress events are
    skipped (a poll would have reported them); its own step is the answer."""
    step = await world.waiting(script={**TWO_STEPS, "latency_ms": 100})
    outcome = await world.submit(step)
    assert outcome.new_provider_run_id is not None
    follow_up = ProviderRun(outcome.new_provider_run_id, "queued", None, (), None, None, None)
    seen, changed = await watch(world, follow_up, since=step)
    assert changed and seen.status == "requires_action"
    assert seen.step_id == outcome.new_provider_run_id
    assert requests.streams(outcome.new_provider_run_id) == [None]


async def test_a_dropped_stream_resumes_after_the_last_event_seen(
    world: World, requests: Requests
) -> None:
    # The stream's drops are drawn per event from a seeded generator: with this seed some
    # come after events were delivered, so a reconnect resumes mid-stream.
    world.sim.faults({"endpoints": {"retrieve": {"stream_drop_rate": 0.5}}, "seed": 5})
    run, _ = await world.create(script={**SLOW_STEP, "latency_ms": 100})
    step, changed = await watch(world, run)
    assert changed and step.status == "requires_action"
    opened = requests.streams(run.provider_run_id)
    fired = world.sim.admin.get("/faults").json()["fired"]["retrieve.stream_drop"]
    assert len(opened) == fired + 1  # every drop was followed by one reconnect
    resumed = [int(after) for after in opened if after is not None]
    assert resumed and resumed == sorted(resumed)  # never back to an earlier event
    assert requests.plain_reads(run.provider_run_id) == 0


async def test_a_watch_that_sees_no_change_returns_the_last_state(world: World) -> None:
    run, _ = await world.create(script={**SLOW_STEP, "latency_ms": 60_000})
    began = time.monotonic()
    seen, changed = await watch(world, run, timeout_ms=200)
    assert (seen.status, changed) == ("in_progress", False)
    assert 0.2 <= time.monotonic() - began < 2


async def test_an_unreachable_stream_is_raised_once_the_watch_is_over(world: World) -> None:
    run, _ = await world.create(script=SLOW_STEP)
    world.sim.faults({"endpoints": {"retrieve": {"error_rate": 1.0}}})
    began = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        await watch(world, run, timeout_ms=200)
    assert time.monotonic() - began >= 0.2  # retried until the deadline, not given up at once


async def test_a_stream_that_keeps_dropping_still_reports_what_it_saw(world: World) -> None:
    run, _ = await world.create(script={**SLOW_STEP, "latency_ms": 60_000})
    await world.until(run, "in_progress")
    world.sim.faults({"endpoints": {"retrieve": {"stream_drop_rate": 0.6}}, "seed": 1})
    seen, changed = await watch(world, run, timeout_ms=300)
    assert (seen.status, changed) == ("in_progress", False)


async def test_a_cancel_ends_the_stream_and_the_watch_says_cancelled(
    world: World, requests: Requests
) -> None:
    run, _ = await world.create(script={**SLOW_STEP, "latency_ms": 60_000})
    working = await world.until(run, "in_progress")
    opened = len(requests.streams(run.provider_run_id))
    watching = asyncio.create_task(watch(world, working, timeout_ms=5_000))
    deadline = time.monotonic() + 5
    while len(requests.streams(run.provider_run_id)) == opened:  # the watch's stream is asked
        assert time.monotonic() < deadline, "the watch opened no stream"
        await asyncio.sleep(0.001)
    assert await world.cancel(working) in ("cancelling", "cancelled")
    began = time.monotonic()
    seen, changed = await asyncio.wait_for(watching, 5)
    assert (seen.status, changed) == ("cancelled", True)
    assert time.monotonic() - began < 2


async def test_a_step_answered_elsewhere_is_followed_through_the_conversation(
    world: World, stream_client: AsyncOpenAI, requests: Requests
) -> None:
    """The follow-up's id was lost: the stream of the step's response ends in
    requires_action, and the conversation shows the turn moved on, as retrieve reports it.
    (The coordinator watches the step's response as working after such a submission, so a
    watch begun on a working response must look too: without it the watch and the
    coordinator spun, in test_lost_follow_up_answers_never_double_a_step.)"""
    step = await world.waiting(script=SLOW_STEP)
    await stream_client.responses.create(
        model="gpt-4o",
        background=True,
        conversation=world.thread_id,
        input=[
            {"type": "function_call_output", "call_id": o.tool_call_id, "output": o.output}
            for o in outputs_for(step, "T-1")
        ],
    )
    working = ProviderRun(step.provider_run_id, "in_progress", None, (), None, None, None)
    opened = len(requests.streams(step.provider_run_id))
    seen, changed = await watch(world, working)  # (a watch begun before the step appeared)
    assert changed and seen.provider_run_id == step.provider_run_id
    assert seen.status in ("in_progress", "completed")
    assert len(requests.streams(step.provider_run_id)) == opened + 1


async def test_a_submission_given_its_turn_reads_only_the_conversation(
    world: World, requests: Requests, stream_client: AsyncOpenAI
) -> None:
    """The follow-up names the turn's model and carries its metadata: given them (an intent
    of v2), the step's response is not read; the conversation still is (answered already?)."""
    step = await world.waiting(script=TWO_STEPS)
    requests.seen.clear()
    created = await stream_client.responses.retrieve(step.provider_run_id)
    requests.seen.clear()
    turn = Turn("r-1", world.assistant_id, {"team": "billing"})
    outcome = await world.submit(step, turn=turn)
    assert outcome.outcome == "submitted" and outcome.new_provider_run_id is not None
    assert requests.plain_reads(step.provider_run_id) == 0
    assert requests.conversation_reads(world.thread_id) == 1
    follow_up = await stream_client.responses.retrieve(outcome.new_provider_run_id)
    assert follow_up.model == created.model == world.assistant_id
    assert follow_up.metadata == {"team": "billing", RUN_ID_KEY: "r-1", STEP_KEY: step.step_id}


async def test_a_submission_without_its_turn_reads_it_from_the_step(
    world: World, requests: Requests, stream_client: AsyncOpenAI
) -> None:
    """An intent written before v2 names no turn: the step's response gives its model and
    metadata, as it did before."""
    step = await world.waiting(script=TWO_STEPS)
    created = await stream_client.responses.retrieve(step.provider_run_id)
    requests.seen.clear()
    outcome = await world.submit(step)
    assert outcome.outcome == "submitted" and outcome.new_provider_run_id is not None
    assert requests.plain_reads(step.provider_run_id) == 1
    assert requests.conversation_reads(world.thread_id) == 1
    follow_up = await stream_client.responses.retrieve(outcome.new_provider_run_id)
    assert follow_up.model == created.model
    assert created.metadata is not None and follow_up.metadata == {
        **created.metadata,
        STEP_KEY: step.step_id,
    }


def _submit_intent(world: World, step: ProviderRun) -> it.SubmitOutputsIntent:
    assert step.step_id is not None
    return it.SubmitOutputsIntent(
        effect_key="ek-r1-submit-1",
        run_id="r-1",
        tenant="t1",
        thread_id=world.thread_id,
        provider="responses",
        provider_run_id=step.provider_run_id,
        step_id=step.step_id,
        outputs=outputs_for(step, "T-1"),
        deadline_ms=int(time.time() * 1000) + 60_000,
        assistant_id=world.assistant_id,
        metadata={},
    )


async def test_a_first_send_reads_nothing_before_the_follow_up(
    world: World, requests: Requests
) -> None:
    """No earlier request of the submission was sent (the ledger), and nothing else answers a
    step while its submission is out (the coordinator holds a cancel): it only sends."""
    step = await world.waiting(script=TWO_STEPS)
    intent = _submit_intent(world, step)
    submissions = Submissions({"responses": world.provider}, LedgerGuard(InMemoryLedger(), "e"))
    requests.seen.clear()
    (result,) = await submissions(intent)
    assert isinstance(result, inp.SubmissionResult) and result.outcome == "submitted"
    assert [path.rsplit("/", 1)[-1] for path, _ in requests.seen] == ["responses"]


async def test_a_send_after_one_that_may_have_acted_looks_first(
    world: World, requests: Requests
) -> None:
    """An earlier attempt marked the submission sent and vanished: the conversation is read
    before anything is sent again, and shows the step answered, so nothing is."""
    step = await world.waiting(script=TWO_STEPS)
    intent = _submit_intent(world, step)
    now = [1_000.0]
    ledger = InMemoryLedger(clock=lambda: now[0])
    meta = EffectMeta(
        "submit_outputs",
        "t1",
        "r-1",
        intent.step_id,
        None,
        request_hash({o.tool_call_id: o.payload_hash for o in intent.outputs}),
    )
    earlier = ledger.claim(intent.effect_key, meta, "e-0", 30.0)
    assert isinstance(earlier, Acquired) and ledger.mark_sent(intent.effect_key, earlier.token)
    assert (await world.submit(step)).outcome == "submitted"  # what that attempt did
    now[0] += 60  # its lease lapsed
    requests.seen.clear()
    submissions = Submissions({"responses": world.provider}, LedgerGuard(ledger, "e-1"))
    (result,) = await submissions(intent)
    assert isinstance(result, inp.SubmissionResult) and result.outcome == "already_submitted"
    assert requests.conversation_reads(world.thread_id) >= 1
    assert not [path for path, _ in requests.seen if path.endswith("/responses")]

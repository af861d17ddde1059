"""The official ``openai`` SDK against a real simulator server, unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.beta.threads import Run

from tests.sim_server import LiveServer, wait_until

# The SDK marks its Assistants methods deprecated (OpenAI sunset its hosted Assistants API;
# the assistants.* methods say just "deprecated"). This simulator is one of the
# Assistants-compatible servers the adapter still targets, so exactly those are let through.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]

TOOLS: list[Any] = [
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
def client(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live.base_url + "/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def new_turn(client: OpenAI, **run_args: Any) -> Run:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=TOOLS)
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="open a ticket")
    run: Run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, **run_args)
    return run


def wait_for(client: OpenAI, run: Run, *statuses: str) -> Run:
    def reached() -> Run | None:
        current: Run = client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
        return current if current.status in statuses else None

    result = wait_until(reached, what=f"run {run.id} to reach {statuses}")
    assert isinstance(result, Run)
    return result


def test_a_turn_with_a_tool_call(client: OpenAI, live: LiveServer) -> None:
    run = new_turn(client, metadata={"run_id": "ours-1", "tenant": "t1"})
    assert run.status == "queued" and run.metadata == {"run_id": "ours-1", "tenant": "t1"}
    # The SDK's own poll helper, pacing itself by the openai-poll-after-ms header.
    run = client.beta.threads.runs.poll(run.id, thread_id=run.thread_id)
    assert run.status == "requires_action"
    assert run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "create_ticket"
    assert json.loads(call.function.arguments) == {"title": "sample"}

    run = client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=run.thread_id, tool_outputs=[{"tool_call_id": call.id, "output": "T-1"}]
    )
    assert run.status == "queued"
    run = client.beta.threads.runs.poll(run.id, thread_id=run.thread_id)
    assert run.status == "completed" and run.usage is not None

    messages = client.beta.threads.messages.list(run.thread_id)
    reply = messages.data[0]
    assert reply.role == "assistant" and reply.run_id == run.id
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]

    records = live.records()
    assert records["counts"]["creates_by_run_id"] == {"ours-1": 1}
    assert list(records["counts"]["accepted_by_step"].values()) == [1]


def test_retrieve_carries_the_poll_hint_and_a_request_id(client: OpenAI) -> None:
    run = new_turn(client)
    raw = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
    assert raw.headers["openai-poll-after-ms"] == "5"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().id == run.id


def test_list_runs_paged_and_found_by_metadata(client: OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create()
    created = []
    for i in range(5):
        run = client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, metadata={"run_id": f"r{i}"}
        )
        created.append(run.id)
        wait_for(client, run, "completed")
    page = client.beta.threads.runs.list(thread.id, limit=2)
    assert [r.id for r in page.data] == [created[4], created[3]] and page.has_more
    everything = [r.id for r in client.beta.threads.runs.list(thread.id, limit=2)]
    assert everything == list(reversed(created))  # the SDK followed the cursors
    oldest_first = client.beta.threads.runs.list(thread.id, order="asc", limit=100)
    assert [r.id for r in oldest_first.data] == created
    # How a coordinator reconciles a create whose answer it never saw.
    found = [
        r.id
        for r in client.beta.threads.runs.list(thread.id)
        if (r.metadata or {}).get("run_id") == "r3"
    ]
    assert found == [created[3]]


def test_wrong_tool_call_id_is_a_bad_request(client: OpenAI) -> None:
    run = wait_for(client, new_turn(client), "requires_action")
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.submit_tool_outputs(
            run.id,
            thread_id=run.thread_id,
            tool_outputs=[{"tool_call_id": "call_unknown", "output": "x"}],
        )
    assert caught.value.status_code == 400
    assert caught.value.param == "tool_outputs"
    assert "call_unknown" in caught.value.message
    assert wait_for(client, run, "requires_action").status == "requires_action"


def test_second_submission_is_rejected(client: OpenAI, live: LiveServer) -> None:
    run = wait_for(client, new_turn(client), "requires_action")
    assert run.required_action is not None
    outputs: Any = [
        {"tool_call_id": c.id, "output": "ok"}
        for c in run.required_action.submit_tool_outputs.tool_calls
    ]
    client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=run.thread_id, tool_outputs=outputs
    )
    with pytest.raises(openai.BadRequestError, match="do not accept tool outputs"):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=run.thread_id, tool_outputs=outputs
        )
    counts = live.records()["counts"]["submissions_by_run"][run.id]
    assert counts == {"submissions": 2, "accepted": 1, "rejected": 1}


def test_a_run_left_in_requires_action_expires(client: OpenAI) -> None:
    script = {"steps": [{"tool_calls": [{"name": "create_ticket"}]}], "expires_after_s": 0.05}
    run = new_turn(client, metadata={"sim_script": json.dumps(script)})
    run = wait_for(client, run, "expired")
    assert run.required_action is None and run.expires_at is not None
    with pytest.raises(openai.BadRequestError, match='"expired"'):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=run.thread_id, tool_outputs=[{"tool_call_id": "c", "output": "x"}]
        )


def test_cancel(client: OpenAI) -> None:
    run = wait_for(client, new_turn(client), "requires_action")
    assert client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id).status == "cancelling"
    assert wait_for(client, run, "cancelled").cancelled_at is not None
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"):
        client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)


def test_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="No thread found"):
        client.beta.threads.retrieve("thread_nope")


def test_many_concurrent_turns(live: LiveServer) -> None:
    turns = 60

    async def turn(sdk: AsyncOpenAI, assistant_id: str, i: int) -> str:
        thread = await sdk.beta.threads.create()
        run = await sdk.beta.threads.runs.create(
            thread.id, assistant_id=assistant_id, metadata={"run_id": f"c{i}"}
        )
        run = await sdk.beta.threads.runs.poll(run.id, thread_id=thread.id)
        assert run.required_action is not None
        calls = run.required_action.submit_tool_outputs.tool_calls
        run = await sdk.beta.threads.runs.submit_tool_outputs_and_poll(
            run_id=run.id,
            thread_id=thread.id,
            tool_outputs=[{"tool_call_id": c.id, "output": "ok"} for c in calls],
        )
        return run.status

    async def main() -> list[str]:
        async with AsyncOpenAI(base_url=live.base_url + "/v1", api_key="sk-test") as sdk:
            assistant = await sdk.beta.assistants.create(model="gpt-4o", tools=TOOLS)
            return await asyncio.gather(*(turn(sdk, assistant.id, i) for i in range(turns)))

    assert asyncio.run(main()) == ["completed"] * turns
    counts = live.records()["counts"]
    assert counts["creates_by_run_id"] == {f"c{i}": 1 for i in range(turns)}
    assert len(counts["accepted_by_step"]) == turns
    assert set(counts["accepted_by_step"].values()) == {1}

"""A run's event stream (``stream: true`` on create run, create thread and run, and submit
tool outputs), through the SDK's own typed stream.

Every event is checked against the spec's schema for its kind; a stream follows the run
until the model stops working, and ends with ``done``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.beta import AssistantStreamEvent
from provider_harness import SpecChecker

from tests.sim_server import LiveServer

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]

TOOLS: list[Any] = [{"type": "function", "function": {"name": "lookup"}}]
TWO_STEPS = {"steps": [{"tool_calls": [{"name": "lookup"}]}, {"tool_calls": [{"name": "lookup"}]}]}
SCHEMAS = {
    "thread.created": "ThreadStreamEvent",
    "thread.run.step": "RunStepStreamEvent",
    "thread.run": "RunStreamEvent",
}


@pytest.fixture
def client(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live.base_url + "/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def check(spec: SpecChecker, events: list[AssistantStreamEvent]) -> list[str]:
    for event in events:
        schema = next(s for prefix, s in SCHEMAS.items() if event.event.startswith(prefix))
        sent = {
            "event": event.event,
            "data": event.data.model_dump(mode="json", exclude_unset=True),
        }
        spec.validate(schema, sent)
    return [e.event for e in events]


def opened(client: OpenAI, script: dict[str, Any]) -> tuple[str, list[AssistantStreamEvent]]:
    """A new thread, and a run created on it with ``stream: true``: (thread id, its events)."""
    assistant = client.beta.assistants.create(model="gpt-4o", tools=TOOLS)
    thread = client.beta.threads.create(metadata={})
    events = client.beta.threads.runs.create(
        thread.id,
        assistant_id=assistant.id,
        metadata={"sim_script": json.dumps(script)},
        stream=True,
    )
    return thread.id, list(events)


def answered(
    client: OpenAI, thread_id: str, run_id: str, call_id: str
) -> list[AssistantStreamEvent]:
    """The events of a streamed submission answering ``call_id``."""
    events = client.beta.threads.runs.submit_tool_outputs(
        run_id,
        thread_id=thread_id,
        tool_outputs=[{"tool_call_id": call_id, "output": "found"}],
        stream=True,
    )
    return list(events)


def test_a_streamed_turn_runs_from_created_to_each_step_and_to_completed(
    client: OpenAI, spec: SpecChecker
) -> None:
    thread_id, first = opened(client, TWO_STEPS)
    assert check(spec, first) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.requires_action",
    ]
    run = first[-1].data
    assert run.status == "requires_action" and run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    step = first[3].data
    assert step.type == "tool_calls" and step.step_details.tool_calls[0].id == call.id

    again = answered(client, thread_id, run.id, call.id)
    assert check(spec, again) == [
        "thread.run.step.completed",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.requires_action",
    ]
    assert again[0].data.id == step.id  # the answered step, completed
    (call,) = again[-1].data.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]

    last = answered(client, thread_id, run.id, call.id)
    kinds = check(spec, last)
    assert kinds[-1] == "thread.run.completed" and last[-1].data.status == "completed"
    assert "thread.run.step.completed" in kinds[2:]  # the message step


def test_create_thread_and_run_streams_the_new_thread_first(
    client: OpenAI, spec: SpecChecker
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=TOOLS)
    events = list(
        client.beta.threads.create_and_run(
            assistant_id=assistant.id,
            metadata={"sim_script": json.dumps({"steps": []})},
            stream=True,
        )
    )
    kinds = check(spec, events)
    assert kinds[:3] == ["thread.created", "thread.run.created", "thread.run.queued"]
    assert kinds[-1] == "thread.run.completed"


def test_a_refused_submission_is_an_error_not_a_stream(client: OpenAI) -> None:
    thread_id, first = opened(client, TWO_STEPS)
    with pytest.raises(openai.BadRequestError, match="Expected tool outputs"):
        client.beta.threads.runs.submit_tool_outputs(
            first[-1].data.id,
            thread_id=thread_id,
            tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}],
            stream=True,
        )

"""The official ``openai`` SDK's Responses and Conversations clients against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response

from tests.sim_server import LiveServer, wait_until

TOOLS: Any = [
    {
        "type": "function",
        "name": "create_ticket",
        "parameters": {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


@pytest.fixture
def client(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live.base_url + "/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def wait_done(client: OpenAI, response: Response) -> Response:
    def finished() -> Response | None:
        current = client.responses.retrieve(response.id)
        return current if current.status not in ("queued", "in_progress") else None

    result = wait_until(finished, what=f"response {response.id} to finish")
    assert isinstance(result, Response)
    return result


def output_for(response: Response, text: str = "T-1") -> Any:
    return [
        {"type": "function_call_output", "call_id": item.call_id, "output": text}
        for item in response.output
        if item.type == "function_call"
    ]


def test_a_turn_in_a_conversation(client: OpenAI, live: LiveServer) -> None:
    conversation = client.conversations.create(metadata={"tenant": "t1"})
    first = client.responses.create(
        model="gpt-4o",
        background=True,
        input="open a ticket",
        tools=TOOLS,
        conversation=conversation.id,
        metadata={"run_id": "ours-1"},
    )
    assert first.status == "queued" and first.metadata == {"run_id": "ours-1"}
    first = wait_done(client, first)
    assert first.status == "completed"
    (call,) = first.output
    assert call.type == "function_call" and call.name == "create_ticket"
    assert json.loads(call.arguments) == {"title": "sample"}

    follow = client.responses.create(
        model="gpt-4o",
        background=True,
        input=output_for(first),
        tools=TOOLS,
        conversation=conversation.id,
        metadata={"run_id": "ours-1"},
    )
    follow = wait_done(client, follow)
    assert follow.output_text == "This is a simulated reply."

    items = client.conversations.items.list(conversation.id, order="asc")
    assert [item.type for item in items.data] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    every = [item.id for item in client.conversations.items.list(conversation.id, limit=1)]
    assert len(every) == 4  # the SDK followed last_id cursors

    records = live.records()
    assert records["counts"]["creates_by_run_id"] == {"ours-1": 1}
    assert records["counts"]["accepted_by_step"] == {first.id: 1}


def test_a_turn_with_previous_response_id(client: OpenAI) -> None:
    first = wait_done(
        client, client.responses.create(model="gpt-4o", background=True, input="x", tools=TOOLS)
    )
    follow = client.responses.create(
        model="gpt-4o", previous_response_id=first.id, input=output_for(first), tools=TOOLS
    )
    # Not in the background: the call answers once the model is done.
    assert follow.status == "completed" and follow.previous_response_id == first.id
    inputs = client.responses.input_items.list(follow.id)
    assert [item.type for item in inputs.data] == ["function_call_output"]


def test_unknown_call_id_is_a_bad_request(client: OpenAI, live: LiveServer) -> None:
    first = wait_done(
        client, client.responses.create(model="gpt-4o", background=True, input="x", tools=TOOLS)
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="gpt-4o",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
        )
    assert caught.value.param == "input"
    assert "call_nope" in caught.value.message
    with pytest.raises(openai.BadRequestError, match="No tool output found"):
        client.responses.create(model="gpt-4o", previous_response_id=first.id, input="hello?")
    (sub, sub2) = live.records()["submissions"]
    assert not sub["accepted"] and not sub2["accepted"] and sub["step_id"] == first.id


def test_cancel_a_background_response(client: OpenAI) -> None:
    slow = json.dumps({"final": {"latency_ms": 60_000}})
    response = client.responses.create(
        model="gpt-4o", background=True, input="x", metadata={"sim_script": slow}
    )
    assert client.responses.cancel(response.id).status == "cancelled"
    assert client.responses.retrieve(response.id).status == "cancelled"


def test_lost_follow_up_then_the_conversation_shows_it(client: OpenAI, live: LiveServer) -> None:
    conversation = client.conversations.create()
    first = wait_done(
        client,
        client.responses.create(
            model="gpt-4o",
            background=True,
            input="x",
            tools=TOOLS,
            conversation=conversation.id,
        ),
    )
    live.faults({"endpoints": {"submit": {"lost_rate": 1, "lost_mode": "drop", "max_faults": 1}}})
    with pytest.raises(openai.APIConnectionError):
        client.responses.create(
            model="gpt-4o", background=True, input=output_for(first), conversation=conversation.id
        )
    # Reconciling from the conversation: the output is there, so the step was submitted.
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in items][:3] == ["message", "function_call", "function_call_output"]
    with pytest.raises(openai.BadRequestError, match="already answered"):
        client.responses.create(
            model="gpt-4o", background=True, input=output_for(first), conversation=conversation.id
        )

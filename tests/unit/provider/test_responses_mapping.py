"""Responses objects and conversation items read as the port's values: tables over the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.conversations import ConversationItem, Message
from openai.types.responses import (
    Response,
    ResponseFunctionToolCallItem,
    ResponseFunctionToolCallOutputItem,
)

from runcoord.domain.model import ToolCall
from runcoord.provider import responses_mapping as mapping


def call_item(call_id: str, name: str = "create_ticket") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": "{}",
        "status": "completed",
    }


def message_item(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    part: dict[str, Any] = {"type": kind, "text": text}
    if kind == "output_text":
        part["annotations"] = []
    return {
        "type": "message",
        "id": f"msg_{role}_{text}",
        "role": role,
        "content": [part],
        "status": "completed",
    }


def make_response(
    status: str | None, output: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    """A response's JSON as the API sends it (checked against the SDK's model)."""
    base = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_800_000_000,
        "model": "gpt-4o",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "status": status,
    }
    body = {**base, **fields}
    Response.model_validate(body)
    return body


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (make_response("queued", []), ("queued", None, (), None)),
        (make_response("in_progress", []), ("in_progress", None, (), None)),
        # Done with function calls: a step needing outputs, named by the response.
        (
            make_response("completed", [call_item("c1"), call_item("c2", "send_email")]),
            (
                "requires_action",
                "resp_1",
                (ToolCall("c1", "create_ticket", "{}"), ToolCall("c2", "send_email", "{}")),
                None,
            ),
        ),
        (
            make_response("completed", [message_item("assistant", "hi")]),
            ("completed", None, (), None),
        ),
        (
            make_response("failed", [], error={"code": "server_error", "message": "boom"}),
            ("failed", None, (), "server_error: boom"),
        ),
        (
            make_response(
                "incomplete",
                [message_item("assistant", "cut")],
                incomplete_details={"reason": "max_output_tokens"},
            ),
            ("incomplete", None, (), "incomplete: max_output_tokens"),
        ),
        (make_response("cancelled", []), ("cancelled", None, (), None)),
        # Calls in a response that did not complete are no step.
        (make_response("incomplete", [call_item("c1")]), ("incomplete", None, (), None)),
        (make_response(None, []), ("queued", None, (), None)),
    ],
)
def test_to_provider_run(
    response: dict[str, Any], expected: tuple[str, str | None, tuple[ToolCall, ...], str | None]
) -> None:
    run = mapping.to_provider_run(response, poll_after=9)
    assert (run.provider_run_id, run.poll_after_ms, run.expires_at_ms) == ("resp_1", 9, None)
    assert (run.status, run.step_id, run.tool_calls, run.detail) == expected


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"status": "completed"},  # no id
        {"id": 7, "status": "completed"},
        {"id": "resp_1", "status": "completed", "output": [{**call_item("c1"), "name": None}]},
        {"id": "resp_1", "status": "completed", "output": [{**call_item("c1"), "arguments": {}}]},
    ],
)
def test_what_is_not_a_response_is_a_shape_error(data: Any) -> None:
    with pytest.raises(mapping.ResponseShapeError):
        mapping.to_provider_run(mapping.response_body(data), poll_after=None)


def item(data: dict[str, Any]) -> ConversationItem:
    kinds: dict[str, Any] = {
        "message": Message,
        "function_call": ResponseFunctionToolCallItem,
        "function_call_output": ResponseFunctionToolCallOutputItem,
    }
    parsed: ConversationItem = kinds[data["type"]].model_validate(data)
    return parsed


def output_item(call_id: str, output: str = "ok") -> dict[str, Any]:
    return {
        "type": "function_call_output",
        "id": f"fco_{call_id}",
        "call_id": call_id,
        "output": output,
        "status": "completed",
    }


# Conversations newest item first, as the adapter reads them.
@pytest.mark.parametrize(
    ("newest_first", "found"),
    [
        ([], False),
        ([message_item("user", "open a ticket")], True),
        # The turn went on after our input: still ours.
        ([call_item("c1"), message_item("user", "open a ticket")], True),
        ([message_item("assistant", "done"), message_item("user", "open a ticket")], True),
        # The latest turn is someone else's: ours never arrived.
        ([message_item("user", "other"), message_item("user", "open a ticket")], False),
        ([message_item("assistant", "hi"), message_item("user", "other")], False),
        ([message_item("developer", "be brief"), message_item("user", "open a ticket")], False),
    ],
)
def test_input_scan(newest_first: list[dict[str, Any]], found: bool) -> None:
    scan = mapping.InputScan("open a ticket").see_all(item(i) for i in newest_first)
    assert scan.found is found


STEP = frozenset({"c1", "c2"})


@pytest.mark.parametrize(
    ("newest_first", "expected"),
    [
        ([call_item("c2"), call_item("c1"), message_item("user", "x")], "not_submitted"),
        (
            [
                message_item("assistant", "done"),
                output_item("c2"),
                output_item("c1"),
                call_item("c2"),
                call_item("c1"),
            ],
            "already_submitted",
        ),
        (
            [
                output_item("c1", mapping.CANCELLED_OUTPUT),
                output_item("c2", mapping.CANCELLED_OUTPUT),
                call_item("c2"),
                call_item("c1"),
            ],
            "run_moved_on",
        ),
        # One request carries every output of a step: a part is not ours, cannot tell.
        ([output_item("c1"), call_item("c2"), call_item("c1")], None),
        # The step's calls are not in this conversation at all.
        ([message_item("user", "x")], None),
        ([], None),
        # Outputs of other steps do not count.
        ([output_item("c9"), call_item("c9"), call_item("c2"), call_item("c1")], "not_submitted"),
    ],
)
def test_outputs_scan(newest_first: list[dict[str, Any]], expected: str | None) -> None:
    verdict = mapping.OutputsScan(STEP).see_all(item(i) for i in newest_first).verdict("conv_1")
    assert (verdict.outcome if verdict is not None else None) == expected
    if verdict is not None:
        assert verdict.new_provider_run_id is None and verdict.detail


def test_outputs_scan_stops_once_every_call_is_seen() -> None:
    scan = mapping.OutputsScan(STEP)
    assert not scan.see(item(output_item("c1")))
    assert not scan.see(item(call_item("c2")))
    assert scan.see(item(call_item("c1")))


# -- following a turn through the conversation after a lost follow-up id ----------------


def _call(call_id: str) -> Any:
    return ResponseFunctionToolCallItem.model_construct(
        type="function_call",
        id=f"fc_{call_id}",
        call_id=call_id,
        name="lookup_customer",
        arguments="{}",
        status="completed",
    )


def _output(call_id: str) -> Any:
    return ResponseFunctionToolCallOutputItem.model_construct(
        type="function_call_output",
        id=f"fco_{call_id}",
        call_id=call_id,
        output="ok",
        status="completed",
    )


def _reply() -> Any:
    return Message.model_construct(
        type="message", id="msg_1", role="assistant", content=[], status="completed"
    )


@pytest.mark.parametrize(
    ("newest_first", "status", "step", "calls"),
    [
        ([_output("a")], "in_progress", None, ()),
        ([_call("b"), _output("a")], "requires_action", "resp_1+b", ("b",)),
        ([_call("c"), _call("b"), _output("a")], "requires_action", "resp_1+b", ("b", "c")),
        ([_reply(), _output("a")], "completed", None, ()),
        ([_reply(), _output("b"), _call("b"), _output("a")], "completed", None, ()),
        ([_output("b"), _call("b"), _output("a")], "in_progress", None, ()),
    ],
)
def test_progress_after_our_outputs(
    newest_first: list[Any], status: str, step: str | None, calls: tuple[str, ...]
) -> None:
    scan = mapping.ProgressScan(frozenset({"a"}))
    for item in [*newest_first, _call("a")]:
        if scan.see(item):
            break
    run = scan.run("resp_1")
    assert run is not None
    assert (run.status, run.step_id, tuple(c.id for c in run.tool_calls)) == (status, step, calls)
    assert run.provider_run_id == "resp_1"


def test_no_progress_verdict_when_our_outputs_are_not_there() -> None:
    scan = mapping.ProgressScan(frozenset({"a"}))
    for item in [_call("b"), _call("a")]:
        scan.see(item)
    assert scan.run("resp_1") is None


def test_derived_steps_name_their_base_response() -> None:
    assert mapping.base_response_id("resp_1+call_9") == "resp_1"
    assert mapping.base_response_id("resp_2") == "resp_2"


def test_progress_scan_stops_at_the_steps_own_calls_when_they_are_unanswered() -> None:
    """Outputs come after their calls: once past every call of the step without meeting an
    output of it, the scan stops instead of reading to the conversation's first item."""
    scan = mapping.ProgressScan(frozenset({"a", "b"}))
    assert not scan.see(_reply())
    assert not scan.see(_call("b"))
    assert scan.see(_call("a"))
    assert scan.run("resp_1") is None

"""The Responses and Conversations APIs, driven in-process by a manual clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from provider_harness import SimClient, SpecChecker, make_sim

TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    },
    {"type": "function", "name": "create_ticket", "parameters": {"type": "object"}},
]


def create(sim: SimClient, **body: Any) -> Any:
    return sim.ok("POST", "/responses", {"model": "gpt-4o", "background": True, **body})


def outputs(*call_ids: str, output: str = "ok") -> list[dict[str, str]]:
    return [{"type": "function_call_output", "call_id": c, "output": output} for c in call_ids]


def done(sim: SimClient, response: dict[str, Any]) -> Any:
    sim.clock.advance(1)
    return sim.ok("GET", f"/responses/{response['id']}")


def calls(response: dict[str, Any]) -> list[str]:
    return [item["call_id"] for item in response["output"] if item["type"] == "function_call"]


def test_a_turn_with_previous_response_id(sim: SimClient) -> None:
    first = create(sim, input="find it", tools=TOOLS, metadata={"run_id": "R"})
    assert first["status"] == "queued" and first["output"] == [] and "usage" not in first
    sim.clock.advance(0.011)
    assert sim.ok("GET", f"/responses/{first['id']}")["status"] == "in_progress"
    first = done(sim, first)
    assert first["status"] == "completed" and first["usage"]["total_tokens"] > 0
    (call,) = first["output"]
    assert call["type"] == "function_call" and call["name"] == "lookup"
    assert json.loads(call["arguments"]) == {"q": "sample"}

    follow = create(
        sim,
        previous_response_id=first["id"],
        input=outputs(call["call_id"]),
        tools=TOOLS,
        metadata={"run_id": "R"},
    )
    assert follow["previous_response_id"] == first["id"]
    follow = done(sim, follow)
    (message,) = follow["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == "This is a simulated reply."

    records = sim.admin("GET", "/records")
    assert records["counts"]["creates_by_run_id"] == {"R": 1}
    assert records["counts"]["accepted_by_step"] == {first["id"]: 1}
    assert [r["follow_up"] for r in records["runs"]] == [False, True]
    (sub,) = records["submissions"]
    assert (sub["run_id"], sub["step_id"], sub["tool_call_ids"]) == (
        first["id"],
        first["id"],
        [call["call_id"]],
    )


def test_a_turn_in_a_conversation(sim: SimClient) -> None:
    conversation = sim.ok("POST", "/conversations", {"metadata": {"tenant": "t"}})
    first = done(sim, create(sim, input="hi", tools=TOOLS, conversation=conversation["id"]))
    assert first["conversation"] == {"id": conversation["id"]}
    follow = create(
        sim, input=outputs(*calls(first)), tools=TOOLS, conversation={"id": conversation["id"]}
    )
    done(sim, follow)
    items = sim.ok("GET", f"/conversations/{conversation['id']}/items?order=asc")["data"]
    assert [i["type"] for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert [i.get("role") for i in items] == ["user", None, None, "assistant"]
    newest = sim.ok("GET", f"/conversations/{conversation['id']}/items?limit=1")
    assert newest["data"][0]["id"] == items[-1]["id"] and newest["has_more"] is True
    item = sim.ok("GET", f"/conversations/{conversation['id']}/items/{items[1]['id']}")
    assert item == items[1]


def test_every_open_call_needs_an_output(sim: SimClient) -> None:
    script = {"steps": [{"tool_calls": [{"name": "a"}, {"name": "b"}]}]}
    first = done(
        sim, create(sim, input="x", metadata={"run_id": "R", "sim_script": json.dumps(script)})
    )
    a, b = calls(first)
    error = sim.error(
        400, "POST", "/responses", {"model": "m", "previous_response_id": first["id"], "input": "?"}
    )
    assert error == {
        "message": f"No tool output found for function call {a}.",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    body = {"model": "m", "previous_response_id": first["id"], "input": outputs(a)}
    assert sim.error(400, "POST", "/responses", body)["message"] == (
        f"No tool output found for function call {b}."
    )
    body["input"] = outputs(a, b, "call_nope")
    assert sim.error(400, "POST", "/responses", body)["message"] == (
        "No tool call found for function call output with call_id call_nope."
    )
    body["input"] = outputs(a, b)
    sim.ok("POST", "/responses", body)
    subs = sim.admin("GET", "/records")["submissions"]
    assert [(s["accepted"], s["step_id"]) for s in subs] == [
        (False, first["id"]),
        (False, first["id"]),
        (False, first["id"]),
        (True, first["id"]),
    ]


def test_an_output_for_an_answered_call_is_refused_in_a_conversation(sim: SimClient) -> None:
    conversation = sim.ok("POST", "/conversations", {})
    first = done(sim, create(sim, input="x", tools=TOOLS, conversation=conversation["id"]))
    body = {"model": "m", "conversation": conversation["id"], "input": outputs(*calls(first))}
    sim.ok("POST", "/responses", body)
    error = sim.error(400, "POST", "/responses", body)
    assert "already answered" in error["message"] and error["param"] == "input"
    counts = sim.admin("GET", "/records")["counts"]
    assert counts["accepted_by_step"] == {first["id"]: 1}
    assert counts["submissions_by_run"][first["id"]] == {
        "submissions": 2,
        "accepted": 1,
        "rejected": 1,
    }


def test_two_follow_ups_from_one_response_are_two_branches(sim: SimClient) -> None:
    # OpenAI accepts both (previous_response_id branches); the records show the duplicate.
    first = done(sim, create(sim, input="x", tools=TOOLS))
    body = {"model": "m", "previous_response_id": first["id"], "input": outputs(*calls(first))}
    sim.ok("POST", "/responses", body)
    sim.ok("POST", "/responses", body)
    assert sim.admin("GET", "/records")["counts"]["accepted_by_step"] == {first["id"]: 2}


def test_outputs_added_as_conversation_items_then_a_response_continues(sim: SimClient) -> None:
    conversation = sim.ok("POST", "/conversations", {})
    first = done(sim, create(sim, input="x", tools=TOOLS, conversation=conversation["id"]))
    added = sim.ok(
        "POST", f"/conversations/{conversation['id']}/items", {"items": outputs(*calls(first))}
    )
    assert [i["type"] for i in added["data"]] == ["function_call_output"]
    follow = done(sim, create(sim, conversation=conversation["id"]))
    assert follow["output"][0]["type"] == "message"
    records = sim.admin("GET", "/records")
    assert records["counts"]["accepted_by_step"] == {first["id"]: 1}
    assert records["runs"][1]["follow_up"] is True
    unknown = sim.call(
        "POST", f"/conversations/{conversation['id']}/items", {"items": outputs("call_zz")}
    )
    assert unknown.status_code == 400


def test_a_new_user_message_starts_a_new_turn(sim: SimClient) -> None:
    conversation = sim.ok("POST", "/conversations", {})
    first = done(sim, create(sim, input="x", tools=TOOLS, conversation=conversation["id"]))
    sim.ok(
        "POST", "/responses", {"model": "m", "conversation": conversation["id"],
                               "input": outputs(*calls(first))}
    )  # fmt: skip
    sim.clock.advance(1)
    second = done(sim, create(sim, input="again", tools=TOOLS, conversation=conversation["id"]))
    assert calls(second), "a new turn starts its script over: one call"
    assert sim.admin("GET", "/records")["counts"]["creates_by_run_id"] == {}


def test_foreground_response_answers_when_done(sim: SimClient) -> None:
    before = sim.clock.now()
    response = sim.ok("POST", "/responses", {"model": "m", "input": "hi"})
    assert response["status"] == "completed" and response["background"] is False
    assert sim.clock.now() - before == pytest.approx(0.11)  # queue 10 ms + step 100 ms


def test_scripted_responses(sim: SimClient) -> None:
    script = {
        "steps": [{"tool_calls": [{"name": "a", "arguments": {"n": 1}}, {"name": "b"}]}],
        "final": {"status": "incomplete", "message": "cut"},
    }
    first = done(sim, create(sim, input="x", metadata={"sim_script": json.dumps(script)}))
    assert [i["name"] for i in first["output"]] == ["a", "b"]
    follow = done(
        sim,
        create(
            sim,
            previous_response_id=first["id"],
            input=outputs(*calls(first)),
            metadata={"sim_script": json.dumps({"final": {"message": "ignored"}})},
        ),
    )
    assert follow["status"] == "incomplete"
    assert follow["incomplete_details"] == {"reason": "max_output_tokens"}
    assert follow["output"][0]["content"][0]["text"] == "cut"

    failing = {"final": {"status": "failed", "error": "model fell over"}}
    failed = done(sim, create(sim, input="x", metadata={"sim_script": json.dumps(failing)}))
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "model fell over"}

    sequential = done(
        sim,
        create(
            sim,
            input="x",
            parallel_tool_calls=False,
            metadata={"sim_script": json.dumps(script)},
        ),
    )
    assert [i["name"] for i in sequential["output"]] == ["a"]


def test_script_by_model_and_by_conversation_metadata(spec: SpecChecker) -> None:
    config = {
        "scripts": {"two": {"steps": [{"tool_calls": [{"name": "x"}, {"name": "y"}]}]}},
        "models": {"sim-two": "two"},
    }
    for sim in make_sim(spec, config):
        response = done(sim, create(sim, model="sim-two", input="x"))
        assert [i["name"] for i in response["output"]] == ["x", "y"]
        conversation = sim.ok("POST", "/conversations", {"metadata": {"sim_script": "two"}})
        response = done(sim, create(sim, input="x", conversation=conversation["id"]))
        assert len(calls(response)) == 2


def test_cancel(sim: SimClient) -> None:
    response = create(sim, input="x")
    cancelled = sim.ok("POST", f"/responses/{response['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    assert sim.ok("POST", f"/responses/{response['id']}/cancel")["status"] == "cancelled"
    sim.clock.advance(1)
    assert sim.ok("GET", f"/responses/{response['id']}")["status"] == "cancelled"
    finished = done(sim, create(sim, input="x"))
    error = sim.error(400, "POST", f"/responses/{finished['id']}/cancel")
    assert error["message"] == "Cannot cancel a response with status 'completed'."
    foreground = sim.ok("POST", "/responses", {"model": "m", "input": "x"})
    error = sim.error(400, "POST", f"/responses/{foreground['id']}/cancel")
    assert "background" in error["message"]


def test_input_items(sim: SimClient) -> None:
    response = create(
        sim,
        input=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "message", "role": "assistant", "content": "hello"},
        ],
    )
    page = sim.ok("GET", f"/responses/{response['id']}/input_items?order=asc")
    assert [i["role"] for i in page["data"]] == ["developer", "user", "assistant"]
    assert page["data"][2]["content"][0]["type"] == "output_text"
    newest = sim.ok("GET", f"/responses/{response['id']}/input_items?limit=1")
    assert newest["data"][0]["role"] == "assistant" and newest["has_more"] is True


def test_request_errors(sim: SimClient) -> None:
    conversation = sim.ok("POST", "/conversations", {})
    first = create(sim, input="x")
    error = sim.error(
        400,
        "POST",
        "/responses",
        {"model": "m", "conversation": conversation["id"], "previous_response_id": first["id"]},
    )
    assert error["code"] == "mutually_exclusive_parameters"
    error = sim.error(400, "POST", "/responses", {"model": "m", "previous_response_id": "resp_x"})
    assert (error["param"], error["code"]) == (
        "previous_response_id",
        "previous_response_not_found",
    )
    error = sim.error(404, "POST", "/responses", {"model": "m", "conversation": "conv_nope"})
    assert error["message"] == "Conversation with id 'conv_nope' not found."
    assert sim.error(404, "GET", "/responses/resp_nope")["message"] == (
        "Response with id 'resp_nope' not found."
    )
    assert sim.error(400, "POST", "/responses", {"input": "x"})["param"] == "model"
    assert sim.error(400, "POST", "/responses", {"model": "m", "stream": True})["param"] == "stream"
    error = sim.error(400, "POST", "/responses", {"model": "m", "input": [{"type": "web"}]})
    assert error["param"] == "input[0].type"
    error = sim.error(400, "POST", "/responses", {"model": "m", "input": [{"role": "robot"}]})
    assert error["param"] == "input[0].role"
    error = sim.error(
        400, "POST", "/conversations", {"items": [{"role": "user", "content": "x"}] * 21}
    )
    assert error["code"] == "array_above_max_length"


def test_conversation_update_and_delete(sim: SimClient) -> None:
    conversation = sim.ok("POST", "/conversations", {"items": [{"role": "user", "content": "x"}]})
    updated = sim.ok("POST", f"/conversations/{conversation['id']}", {"metadata": {"a": "b"}})
    assert updated["metadata"] == {"a": "b"}
    assert sim.ok("GET", f"/conversations/{conversation['id']}")["metadata"] == {"a": "b"}
    deleted = sim.ok("DELETE", f"/conversations/{conversation['id']}")
    assert deleted == {"id": conversation["id"], "object": "conversation.deleted", "deleted": True}
    sim.error(404, "GET", f"/conversations/{conversation['id']}")


def test_faults_apply_to_responses(sim: SimClient) -> None:
    first = done(sim, create(sim, input="x", tools=TOOLS, metadata={"run_id": "R"}))
    sim.admin("POST", "/faults", {"endpoints": {"submit": {"lost_rate": 1, "max_faults": 1}}})
    body = {"model": "m", "previous_response_id": first["id"], "input": outputs(*calls(first))}
    sim.error(500, "POST", "/responses", body)
    records = sim.admin("GET", "/records")
    assert records["submissions"][0]["accepted"] is True
    assert records["submissions"][0]["response_lost"] == "500"
    assert records["runs"][1]["response_lost"] == "500"
    sim.admin("POST", "/faults", {"endpoints": {"create": {"error_rate": 1}}})
    sim.error(500, "POST", "/responses", {"model": "m", "input": "x"})
    assert len(sim.admin("GET", "/records")["runs"]) == 2

"""The Assistants run lifecycle, driven in-process by a manual clock (no waiting)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from provider_harness import SimClient

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TICKET = {"type": "function", "function": {"name": "create_ticket"}}


def setup_run(
    sim: SimClient,
    *,
    tools: list[dict[str, Any]] | None = None,
    metadata: dict[str, str] | None = None,
    script: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    assistant = sim.ok("POST", "/assistants", {"model": "gpt-4o", "tools": tools or []})
    thread = sim.ok("POST", "/threads", {})
    meta = dict(metadata or {})
    if script is not None:
        meta["sim_script"] = json.dumps(script)
    run = sim.ok(
        "POST",
        f"/threads/{thread['id']}/runs",
        {"assistant_id": assistant["id"], "metadata": meta},
    )
    return thread["id"], run


def get_run(sim: SimClient, thread_id: str, run_id: str) -> Any:
    return sim.ok("GET", f"/threads/{thread_id}/runs/{run_id}")


def submit(sim: SimClient, thread_id: str, run_id: str, outputs: dict[str, str]) -> Any:
    body = {"tool_outputs": [{"tool_call_id": k, "output": v} for k, v in outputs.items()]}
    return sim.call("POST", f"/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", body)


def calls_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    return calls


def test_default_run_with_tools_asks_one_call_then_completes(sim: SimClient) -> None:
    thread_id, run = setup_run(sim, tools=[WEATHER, TICKET], metadata={"run_id": "r-1"})
    assert run["status"] == "queued"
    assert run["metadata"] == {"run_id": "r-1"}
    assert run["expires_at"] == run["created_at"] + 600
    assert run["required_action"] is None and run["usage"] is None

    sim.clock.advance(0.011)  # past queue_ms (10)
    assert get_run(sim, thread_id, run["id"])["status"] == "in_progress"
    sim.clock.advance(0.1)  # past step_ms (100)
    run = get_run(sim, thread_id, run["id"])
    assert run["status"] == "requires_action"
    (call,) = calls_of(run)
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "sample"}

    run = submit(sim, thread_id, run["id"], {call["id"]: "sunny"}).json()
    assert run["status"] == "queued" and run["required_action"] is None
    sim.clock.advance(1)
    run = get_run(sim, thread_id, run["id"])
    assert run["status"] == "completed"
    assert run["expires_at"] is None and run["completed_at"] is not None
    assert run["usage"]["total_tokens"] > 0

    steps = sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps?order=asc")["data"]
    assert [s["type"] for s in steps] == ["tool_calls", "message_creation"]
    assert steps[0]["step_details"]["tool_calls"][0]["function"]["output"] == "sunny"
    message_id = steps[1]["step_details"]["message_creation"]["message_id"]
    message = sim.ok("GET", f"/threads/{thread_id}/messages/{message_id}")
    assert message["role"] == "assistant" and message["run_id"] == run["id"]


def test_run_without_tools_completes_with_a_message(sim: SimClient) -> None:
    thread_id, run = setup_run(sim)
    sim.clock.advance(1)
    assert get_run(sim, thread_id, run["id"])["status"] == "completed"
    messages = sim.ok("GET", f"/threads/{thread_id}/messages")["data"]
    assert messages[0]["content"][0]["text"]["value"] == "This is a simulated reply."


def test_scripted_steps_latencies_and_final_message(sim: SimClient) -> None:
    script = {
        "steps": [
            {
                "latency_ms": 50,
                "tool_calls": [
                    {"name": "lookup", "arguments": {"id": 1}},
                    {"name": "lookup", "arguments": {"id": 2}},
                ],
            },
            {"latency_ms": 500, "tool_calls": [{"name": "create_ticket", "arguments": "{bad"}]},
        ],
        "final": {"message": "Ticket filed.", "latency_ms": 20},
        "queue_ms": 0,
    }
    thread_id, run = setup_run(sim, tools=[WEATHER], script=script)
    sim.clock.advance(0.049)
    assert get_run(sim, thread_id, run["id"])["status"] == "in_progress"
    sim.clock.advance(0.002)
    run = get_run(sim, thread_id, run["id"])
    first = calls_of(run)
    assert [json.loads(c["function"]["arguments"]) for c in first] == [{"id": 1}, {"id": 2}]
    submit(sim, thread_id, run["id"], {c["id"]: "ok" for c in first})
    sim.clock.advance(0.499)
    assert get_run(sim, thread_id, run["id"])["status"] == "in_progress"
    sim.clock.advance(0.002)
    run = get_run(sim, thread_id, run["id"])
    (second,) = calls_of(run)
    assert second["function"] == {"name": "create_ticket", "arguments": "{bad"}
    submit(sim, thread_id, run["id"], {second["id"]: "T-1"})
    sim.clock.advance(0.021)
    assert get_run(sim, thread_id, run["id"])["status"] == "completed"
    messages = sim.ok("GET", f"/threads/{thread_id}/messages?run_id={run['id']}")["data"]
    assert messages[0]["content"][0]["text"]["value"] == "Ticket filed."


def test_script_from_the_user_message_metadata(sim: SimClient) -> None:
    assistant = sim.ok("POST", "/assistants", {"model": "gpt-4o", "tools": [WEATHER]})
    thread = sim.ok("POST", "/threads", {})
    script = {"steps": [{"tool_calls": [{"name": "create_ticket"}]}]}
    sim.ok(
        "POST",
        f"/threads/{thread['id']}/messages",
        {"role": "user", "content": "file it", "metadata": {"sim_script": json.dumps(script)}},
    )
    run = sim.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    sim.clock.advance(1)
    run = get_run(sim, thread["id"], run["id"])
    assert calls_of(run)[0]["function"] == {"name": "create_ticket", "arguments": "{}"}
    submit(sim, thread["id"], run["id"], {calls_of(run)[0]["id"]: "done"})
    sim.clock.advance(1)
    # The next run does not reuse the message the previous run consumed: default script.
    run2 = sim.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    sim.clock.advance(1)
    assert calls_of(get_run(sim, thread["id"], run2["id"]))[0]["function"]["name"] == "get_weather"


def test_script_from_additional_messages(sim: SimClient) -> None:
    assistant = sim.ok("POST", "/assistants", {"model": "gpt-4o"})
    thread = sim.ok("POST", "/threads", {})
    script = {"final": {"status": "failed", "error": "boom", "latency_ms": 1}}
    run = sim.ok(
        "POST",
        f"/threads/{thread['id']}/runs",
        {
            "assistant_id": assistant["id"],
            "additional_messages": [
                {"role": "user", "content": "hi", "metadata": {"sim_script": json.dumps(script)}}
            ],
        },
    )
    sim.clock.advance(1)
    run = get_run(sim, thread["id"], run["id"])
    assert run["status"] == "failed"
    assert run["last_error"] == {"code": "server_error", "message": "boom"}
    assert run["failed_at"] is not None and run["expires_at"] is None


def test_incomplete_final(sim: SimClient) -> None:
    thread_id, run = setup_run(sim, script={"final": {"status": "incomplete"}})
    sim.clock.advance(1)
    run = get_run(sim, thread_id, run["id"])
    assert run["status"] == "incomplete"
    assert run["incomplete_details"] == {"reason": "max_completion_tokens"}
    message = sim.ok("GET", f"/threads/{thread_id}/messages")["data"][0]
    assert message["status"] == "incomplete"


def test_parallel_tool_calls_false_asks_one_call_per_step(sim: SimClient) -> None:
    assistant = sim.ok("POST", "/assistants", {"model": "gpt-4o"})
    thread = sim.ok("POST", "/threads", {})
    script = {"steps": [{"tool_calls": [{"name": "a"}, {"name": "b"}]}]}
    run = sim.ok(
        "POST",
        f"/threads/{thread['id']}/runs",
        {
            "assistant_id": assistant["id"],
            "parallel_tool_calls": False,
            "metadata": {"sim_script": json.dumps(script)},
        },
    )
    names = []
    for _ in range(2):
        sim.clock.advance(1)
        run = get_run(sim, thread["id"], run["id"])
        (call,) = calls_of(run)
        names.append(call["function"]["name"])
        submit(sim, thread["id"], run["id"], {call["id"]: "x"})
    assert names == ["a", "b"]


def test_script_named_in_config_for_an_assistant(spec: Any) -> None:
    from provider_harness import make_sim

    config = {
        "scripts": {"two": {"steps": [{"tool_calls": [{"name": "x"}, {"name": "y"}]}]}},
        "assistants": {"support-bot": "two"},
    }
    for sim in make_sim(spec, config):
        assistant = sim.ok("POST", "/assistants", {"model": "m", "name": "support-bot"})
        thread = sim.ok("POST", "/threads", {})
        run = sim.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
        sim.clock.advance(1)
        run = get_run(sim, thread["id"], run["id"])
        assert [c["function"]["name"] for c in calls_of(run)] == ["x", "y"]
        # A run can also name a config script instead of carrying it inline.
        thread2 = sim.ok("POST", "/threads", {})
        other = sim.ok("POST", "/assistants", {"model": "m"})
        run2 = sim.ok(
            "POST",
            f"/threads/{thread2['id']}/runs",
            {"assistant_id": other["id"], "metadata": {"sim_script": "two"}},
        )
        sim.clock.advance(1)
        assert len(calls_of(get_run(sim, thread2["id"], run2["id"]))) == 2


def test_bad_script_is_the_clients_400(sim: SimClient) -> None:
    assistant = sim.ok("POST", "/assistants", {"model": "gpt-4o"})
    thread = sim.ok("POST", "/threads", {})
    for value in ('{"steps": [{"tool_calls": []}]}', "no-such-script", "{not json"):
        error = sim.error(
            400,
            "POST",
            f"/threads/{thread['id']}/runs",
            {"assistant_id": assistant["id"], "metadata": {"sim_script": value}},
        )
        assert error["param"] == "metadata" and "sim_script" in error["message"]


# -- submissions -----------------------------------------------------------------------


def _waiting_run(sim: SimClient, n_calls: int = 2) -> tuple[str, dict[str, Any]]:
    script = {"steps": [{"tool_calls": [{"name": f"t{i}"} for i in range(n_calls)]}]}
    thread_id, run = setup_run(sim, script=script, metadata={"run_id": "ours"})
    sim.clock.advance(1)
    return thread_id, get_run(sim, thread_id, run["id"])


def test_all_outputs_of_the_step_in_one_submission(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim)
    first, second = (c["id"] for c in calls_of(run))
    missing = submit(sim, thread_id, run["id"], {first: "1"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "tool_outputs"
    assert first in missing.json()["error"]["message"]
    unknown = submit(sim, thread_id, run["id"], {first: "1", second: "2", "call_nope": "3"})
    assert unknown.status_code == 400
    assert get_run(sim, thread_id, run["id"])["status"] == "requires_action"
    assert submit(sim, thread_id, run["id"], {first: "1", second: "2"}).status_code == 200


def test_duplicate_id_in_one_submission_is_rejected(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim, 1)
    (call,) = calls_of(run)
    body = {"tool_outputs": [{"tool_call_id": call["id"], "output": "a"}] * 2}
    response = sim.call("POST", f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs", body)
    assert response.status_code == 400


def test_second_submission_is_rejected_and_recorded(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim, 1)
    (call,) = calls_of(run)
    assert submit(sim, thread_id, run["id"], {call["id"]: "x"}).status_code == 200
    again = submit(sim, thread_id, run["id"], {call["id"]: "x"})
    assert again.status_code == 400
    assert again.json()["error"]["message"] == 'Runs in status "queued" do not accept tool outputs.'
    sim.clock.advance(1)
    late = submit(sim, thread_id, run["id"], {call["id"]: "x"})
    assert late.json()["error"]["message"] == (
        'Runs in status "completed" do not accept tool outputs.'
    )
    records = sim.admin("GET", "/records")
    assert records["counts"]["creates_by_run_id"] == {"ours": 1}
    assert records["counts"]["submissions_by_run"][run["id"]] == {
        "submissions": 3,
        "accepted": 1,
        "rejected": 2,
    }
    step_id = records["submissions"][0]["step_id"]
    assert records["counts"]["accepted_by_step"] == {step_id: 1}
    assert [s["accepted"] for s in records["submissions"]] == [True, False, False]
    assert all(s["step_id"] == step_id for s in records["submissions"])
    assert records["runs"][0]["status"] == "completed"


def test_malformed_submission_bodies(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim, 1)
    path = f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs"
    assert sim.error(400, "POST", path, {})["code"] == "missing_required_parameter"
    error = sim.error(400, "POST", path, {"tool_outputs": [{"output": "x"}]})
    assert error["param"] == "tool_outputs[0].tool_call_id"
    error = sim.error(400, "POST", path, {"tool_outputs": "x"})
    assert error["code"] == "invalid_type"


# -- expiry and cancel ---------------------------------------------------------------------


def test_requires_action_past_expires_at_becomes_expired(sim: SimClient) -> None:
    script = {"steps": [{"tool_calls": [{"name": "slow_tool"}]}], "expires_after_s": 5}
    thread_id, run = setup_run(sim, script=script)
    assert run["expires_at"] == run["created_at"] + 5
    sim.clock.advance(1)
    run = get_run(sim, thread_id, run["id"])
    (call,) = calls_of(run)
    sim.clock.advance(4.5)
    run = get_run(sim, thread_id, run["id"])
    assert run["status"] == "expired" and run["required_action"] is None
    assert run["expires_at"] is not None
    step = sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps")["data"][0]
    assert step["status"] == "expired" and step["expired_at"] is not None
    late = submit(sim, thread_id, run["id"], {call["id"]: "x"})
    assert late.json()["error"]["message"] == 'Runs in status "expired" do not accept tool outputs.'


def test_expiry_is_decided_by_time_not_by_when_the_run_is_read(sim: SimClient) -> None:
    # Never read while it ran: the history is still the one the clock dictates.
    script = {"steps": [{"tool_calls": [{"name": "t"}], "latency_ms": 100}], "expires_after_s": 2}
    thread_id, run = setup_run(sim, script=script)
    sim.clock.advance(60)
    run = get_run(sim, thread_id, run["id"])
    assert run["status"] == "expired"
    steps = sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps")["data"]
    assert len(steps) == 1 and steps[0]["created_at"] == run["created_at"]


def test_cancel(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim, 1)
    cancelled = sim.ok("POST", f"/threads/{thread_id}/runs/{run['id']}/cancel")
    assert cancelled["status"] == "cancelling"
    assert sim.error(400, "POST", f"/threads/{thread_id}/runs/{run['id']}/cancel")["message"] == (
        "Cannot cancel run with status 'cancelling'."
    )
    sim.clock.advance(1)
    run = get_run(sim, thread_id, run["id"])
    assert run["status"] == "cancelled" and run["cancelled_at"] is not None
    error = sim.error(400, "POST", f"/threads/{thread_id}/runs/{run['id']}/cancel")
    assert error["message"] == "Cannot cancel run with status 'cancelled'."
    step = sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps")["data"][0]
    assert step["status"] == "cancelled"


def test_cancel_of_a_completed_run_is_400(sim: SimClient) -> None:
    thread_id, run = setup_run(sim)
    sim.clock.advance(1)
    error = sim.error(400, "POST", f"/threads/{thread_id}/runs/{run['id']}/cancel")
    assert error["message"] == "Cannot cancel run with status 'completed'."


# -- the thread's rules -----------------------------------------------------------------


def test_one_active_run_per_thread(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim, 1)
    assistant_id = run["assistant_id"]
    error = sim.error(400, "POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id})
    assert error["message"] == f"Thread {thread_id} already has an active run {run['id']}."
    error = sim.error(
        400, "POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "more"}
    )
    assert (
        error["message"] == f"Can't add messages to {thread_id} while a run {run['id']} is active."
    )
    submit(sim, thread_id, run["id"], {calls_of(run)[0]["id"]: "x"})
    sim.clock.advance(1)
    sim.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "more"})
    sim.ok("POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id})


def test_list_runs_pages_like_openai(sim: SimClient) -> None:
    assistant = sim.ok("POST", "/assistants", {"model": "m"})
    thread = sim.ok("POST", "/threads", {})
    ids = []
    for i in range(5):
        run = sim.ok(
            "POST",
            f"/threads/{thread['id']}/runs",
            {"assistant_id": assistant["id"], "metadata": {"run_id": f"r{i}"}},
        )
        ids.append(run["id"])
        sim.clock.advance(1)  # completes, so the next run may start
    base = f"/threads/{thread['id']}/runs"
    page = sim.ok("GET", f"{base}?limit=2")
    assert [r["id"] for r in page["data"]] == [ids[4], ids[3]]
    assert page["has_more"] is True and page["first_id"] == ids[4] and page["last_id"] == ids[3]
    page = sim.ok("GET", f"{base}?limit=2&after={ids[3]}")
    assert [r["id"] for r in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    page = sim.ok("GET", f"{base}?limit=2&after={ids[1]}")
    assert [r["id"] for r in page["data"]] == [ids[0]] and page["has_more"] is False
    page = sim.ok("GET", f"{base}?order=asc&limit=3")
    assert [r["id"] for r in page["data"]] == ids[:3]
    page = sim.ok("GET", f"{base}?order=asc&before={ids[3]}&limit=2")
    assert [r["id"] for r in page["data"]] == [ids[1], ids[2]] and page["has_more"] is True
    assert [r["metadata"]["run_id"] for r in sim.ok("GET", base)["data"]] == [
        "r4", "r3", "r2", "r1", "r0"
    ]  # fmt: skip
    empty = sim.ok("GET", f"{base}?after={ids[0]}")
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert sim.error(400, "GET", f"{base}?limit=101")["code"] == "integer_above_max_value"
    assert sim.error(400, "GET", f"{base}?order=up")["param"] == "order"


def test_create_thread_and_run(sim: SimClient) -> None:
    assistant = sim.ok("POST", "/assistants", {"model": "m", "tools": [WEATHER]})
    run = sim.ok(
        "POST",
        "/threads/runs",
        {
            "assistant_id": assistant["id"],
            "thread": {"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "v"}},
            "metadata": {"run_id": "tr-1"},
        },
    )
    thread = sim.ok("GET", f"/threads/{run['thread_id']}")
    assert thread["metadata"] == {"k": "v"}
    sim.clock.advance(1)
    assert get_run(sim, thread["id"], run["id"])["status"] == "requires_action"
    assert sim.admin("GET", "/records")["counts"]["creates_by_run_id"] == {"tr-1": 1}


# -- OpenAI's request checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        ("/assistants", {}, "model", "missing_required_parameter"),
        ("/assistants", {"model": 3}, "model", "invalid_type"),
        ("/assistants", {"model": "m", "colour": "red"}, "colour", "unknown_parameter"),
        (
            "/assistants",
            {"model": "m", "metadata": {f"k{i}": "v" for i in range(17)}},
            "metadata",
            "object_above_max_properties",
        ),
        (
            "/assistants",
            {"model": "m", "metadata": {"k": "v" * 513}},
            "metadata.k",
            "string_above_max_length",
        ),
        (
            "/assistants",
            {"model": "m", "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        (
            "/threads",
            {"messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
    ],
)
def test_request_validation(sim: SimClient, path: str, body: Any, param: str, code: str) -> None:
    error = sim.error(400, "POST", path, body)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_not_found_and_headers(sim: SimClient) -> None:
    error = sim.error(404, "GET", "/threads/thread_nope")
    assert error["message"] == "No thread found with id 'thread_nope'."
    thread = sim.ok("POST", "/threads", {})
    error = sim.error(404, "GET", f"/threads/{thread['id']}/runs/run_nope")
    assert error["message"] == "No run found with id 'run_nope'."
    assert sim.error(404, "GET", "/nowhere")["message"] == "Invalid URL (GET /v1/nowhere)"
    no_beta = sim.http.get(f"/v1/threads/{thread['id']}", headers={"Authorization": "Bearer k"})
    assert no_beta.status_code == 400 and no_beta.json()["error"]["code"] == "invalid_beta"
    no_key = sim.http.get(f"/v1/threads/{thread['id']}", headers={"OpenAI-Beta": "assistants=v2"})
    assert no_key.status_code == 401
    response = sim.call("POST", "/threads", {})
    assert response.headers["x-request-id"].startswith("req_")
    bad_json = sim.http.post(
        "/v1/threads",
        content=b"{nope",
        headers={**sim_headers(), "content-type": "application/json"},
    )
    assert (
        bad_json.status_code == 400 and "parse the JSON body" in bad_json.json()["error"]["message"]
    )


def sim_headers() -> dict[str, str]:
    from provider_harness import HEADERS

    return dict(HEADERS)


def test_the_records_count_every_request_by_route_and_answered_or_not(sim: SimClient) -> None:
    thread_id, run = _waiting_run(sim, 1)
    path = f"/threads/{thread_id}/runs/{run['id']}"
    retrieve = "GET /v1/threads/{thread_id}/runs/{run_id}"
    before = sim.admin("GET", "/records")["counts"]["requests"]
    sim.ok("GET", path)
    sim.ok("GET", path)
    sim.error(404, "GET", f"/threads/{thread_id}/runs/run_nope")
    sim.admin("GET", "/faults")  # the admin API is not the provider's
    requests = sim.admin("GET", "/records")["counts"]["requests"]
    assert requests[retrieve] == before.get(retrieve, 0) + 3
    assert requests["POST /v1/threads/{thread_id}/runs"] == 1
    assert not [r for r in requests if "_sim" in r]
    sim.admin("POST", "/reset")
    assert sim.admin("GET", "/records")["counts"]["requests"] == {}


def test_reset_forgets_everything(sim: SimClient) -> None:
    thread_id, _ = setup_run(sim, metadata={"run_id": "x"})
    sim.admin("POST", "/reset")
    assert sim.admin("GET", "/records")["runs"] == []
    sim.error(404, "GET", f"/threads/{thread_id}")


def test_records_survive_a_deleted_thread(sim: SimClient) -> None:
    thread_id, _ = setup_run(sim, metadata={"run_id": "gone"})
    sim.clock.advance(1)
    sim.ok("DELETE", f"/threads/{thread_id}")
    (record,) = sim.admin("GET", "/records")["runs"]
    assert (record["our_run_id"], record["status"]) == ("gone", "completed")

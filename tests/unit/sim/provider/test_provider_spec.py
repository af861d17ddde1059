"""Every answer the simulator gives, checked against OpenAI's published schemas.

``SimClient`` validates each response on the way (200s by endpoint, errors as
ErrorResponse); here one scenario reaches every implemented endpoint in every state worth
seeing, and the checker itself is shown to catch a missing, mistyped or unknown field.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import jsonschema
import pytest
from provider_harness import SPEC_EXTRACT, SimClient, SpecChecker, make_sim

# OpenAI's published spec (MIT), kept beside its extract; see spec/extract.py.
FULL_SPEC = SPEC_EXTRACT.with_name("openai-openapi.yaml.gz")
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}},
}


def _script(**script: Any) -> dict[str, str]:
    return {"sim_script": json.dumps(script)}


def test_every_endpoint_in_every_state_matches_the_spec(spec: SpecChecker) -> None:
    checker = SpecChecker(spec.document)
    for sim in make_sim(checker):
        _scenario(sim)
        _responses_scenario(sim)
    assert checker.seen == checker.operations(), checker.operations() - checker.seen


def _scenario(sim: SimClient) -> None:
    asst = sim.ok(
        "POST",
        "/assistants",
        {"model": "gpt-4o", "name": "a", "instructions": "be brief", "tools": [TOOL]},
    )
    sim.ok("GET", f"/assistants/{asst['id']}")
    sim.ok("GET", "/assistants")
    thread = sim.ok(
        "POST",
        "/threads",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    )
    tid = thread["id"]
    sim.ok("GET", f"/threads/{tid}")
    sim.ok("GET", f"/threads/{tid}/runs")  # empty page
    run = sim.ok(
        "POST",
        f"/threads/{tid}/runs",
        {
            "assistant_id": asst["id"],
            "metadata": {"run_id": "r1", **_script(steps=[{"tool_calls": [{"name": "lookup"}]}])},
            "additional_instructions": "more",
            "truncation_strategy": {"type": "last_messages", "last_messages": 5},
        },
    )
    rid = run["id"]
    sim.clock.advance(0.05)
    assert sim.ok("GET", f"/threads/{tid}/runs/{rid}")["status"] == "in_progress"
    sim.clock.advance(1)
    waiting = sim.ok("GET", f"/threads/{tid}/runs/{rid}")
    assert waiting["status"] == "requires_action"
    steps = sim.ok("GET", f"/threads/{tid}/runs/{rid}/steps")
    sim.ok("GET", f"/threads/{tid}/runs/{rid}/steps/{steps['data'][0]['id']}")
    call_id = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    sim.ok(
        "POST",
        f"/threads/{tid}/runs/{rid}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": call_id, "output": "42"}]},
    )
    sim.clock.advance(1)
    sim.ok("GET", f"/threads/{tid}/runs/{rid}/steps?order=asc")
    messages = sim.ok("GET", f"/threads/{tid}/messages")
    sim.ok("GET", f"/threads/{tid}/messages/{messages['data'][0]['id']}")
    sim.ok("POST", f"/threads/{tid}/messages", {"role": "user", "content": "again"})

    for metadata, then in (
        (_script(final={"status": "failed"}), None),
        (_script(final={"status": "incomplete"}), None),
        (_script(steps=[{"tool_calls": [{"name": "x"}]}]), "cancel"),
        (_script(steps=[{"tool_calls": [{"name": "x"}]}], expires_after_s=2), "expire"),
    ):
        other = sim.ok(
            "POST", f"/threads/{tid}/runs", {"assistant_id": asst["id"], "metadata": metadata}
        )
        sim.clock.advance(1)
        if then == "cancel":
            sim.ok("POST", f"/threads/{tid}/runs/{other['id']}/cancel")
        sim.clock.advance(5)
        sim.ok("GET", f"/threads/{tid}/runs/{other['id']}")
        sim.ok("GET", f"/threads/{tid}/runs/{other['id']}/steps")
    sim.ok("GET", f"/threads/{tid}/runs?limit=3")
    sim.ok("GET", f"/threads/{tid}/messages?order=asc")

    both = sim.ok("POST", "/threads/runs", {"assistant_id": asst["id"], "thread": {}})
    sim.ok("GET", f"/threads/{both['thread_id']}/runs/{both['id']}")
    sim.error(400, "POST", f"/threads/{tid}/runs/{rid}/cancel")
    sim.error(404, "GET", "/assistants/asst_nope")
    sim.ok("DELETE", f"/threads/{tid}")
    sim.ok("DELETE", f"/assistants/{asst['id']}")


def _responses_scenario(sim: SimClient) -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    conv = sim.ok(
        "POST",
        "/conversations",
        {"metadata": {"k": "v"}, "items": [{"role": "user", "content": "hi"}]},
    )
    cid = conv["id"]
    sim.ok("GET", f"/conversations/{cid}")
    sim.ok("POST", f"/conversations/{cid}", {"metadata": {"k": "w"}})
    first = sim.ok(
        "POST",
        "/responses",
        {"model": "gpt-4o", "background": True, "tools": tools, "conversation": cid,
         "input": [{"role": "developer", "content": "brief"}], "metadata": {"run_id": "r2"}},
    )  # fmt: skip
    sim.clock.advance(0.05)
    sim.ok("GET", f"/responses/{first['id']}")  # in progress
    sim.clock.advance(1)
    first = sim.ok("GET", f"/responses/{first['id']}")
    call_id = first["output"][0]["call_id"]
    added = sim.ok(
        "POST",
        f"/conversations/{cid}/items",
        {"items": [{"type": "function_call_output", "call_id": call_id, "output": "42"}]},
    )
    follow = sim.ok("POST", "/responses", {"model": "gpt-4o", "conversation": cid})
    sim.ok("GET", f"/responses/{follow['id']}/input_items")
    sim.ok("GET", f"/responses/{first['id']}/input_items")
    sim.ok("GET", f"/conversations/{cid}/items")
    sim.ok("GET", f"/conversations/{cid}/items/{added['data'][0]['id']}")
    chained = sim.ok(
        "POST",
        "/responses",
        {"model": "gpt-4o", "previous_response_id": follow["id"], "background": True,
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "more"}]},
                   {"role": "assistant", "content": "noted"}]},
    )  # fmt: skip
    sim.ok("POST", f"/responses/{chained['id']}/cancel")
    sim.ok("GET", f"/responses/{chained['id']}/input_items?order=asc")
    for final in ({"status": "failed"}, {"status": "incomplete"}):
        other = sim.ok(
            "POST",
            "/responses",
            {"model": "m", "input": "x", "metadata": _script(final=final)},
        )
        sim.ok("GET", f"/responses/{other['id']}")
    sim.error(400, "POST", "/responses", {"model": "m", "previous_response_id": "resp_nope"})
    sim.error(404, "GET", f"/conversations/{cid}/items/msg_nope")
    sim.ok("DELETE", f"/conversations/{cid}")


def _valid_run(spec: SpecChecker) -> dict[str, Any]:
    for sim in make_sim(spec):
        asst = sim.ok("POST", "/assistants", {"model": "m"})
        thread = sim.ok("POST", "/threads", {})
        run: dict[str, Any] = sim.ok(
            "POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst["id"]}
        )
        return run
    raise AssertionError("no simulator")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda run: run.pop("usage"), "missing field"),
        (lambda run: run.update(created_at="yesterday"), "mistyped field"),
        (lambda run: run.update(status="waiting"), "value outside the enum"),
        (lambda run: run.update(model=None), "null where the spec has no null"),
        (lambda run: run.update(surprise=1), "field the spec does not name"),
    ],
)
def test_the_checker_catches_drift(spec: SpecChecker, change: Any, problem: str) -> None:
    run = _valid_run(spec)
    spec.validate("RunObject", run)
    change(run)
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        spec.validate("RunObject", run)


def test_nullable_fields_accept_null(spec: SpecChecker) -> None:
    run = _valid_run(spec)
    run.update(truncation_strategy=None, tool_choice=None, response_format=None)
    spec.validate("RunObject", run)


def test_the_extract_was_cut_from_the_kept_spec() -> None:
    recorded = json.loads(SPEC_EXTRACT.read_text())["source_sha256"]
    actual = hashlib.sha256(gzip.decompress(FULL_SPEC.read_bytes())).hexdigest()
    assert recorded == actual, "the spec changed: re-run tests/unit/sim/provider/spec/extract.py"

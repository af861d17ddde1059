"""Tools on an MCP server, end to end on the real stack: every process reads the registry's
MCP twin (tests/integration/e2e.py, ``tools_via="mcp"``), the tool executor calls the sandbox's
``/mcp`` endpoint with the official MCP client, and the sandbox's audit log (the same one the
HTTP tools write) says how many times each call acted.

Exactly once per call, also when the tool executor is killed (-9) after the tool acted and
before the ledger knew, and when the stream is dropped after the tool acted (the executor
sees a broken stream: an unknown outcome, resolved by the tool's own rule: the same key for a
key-honouring tool, the lookup tool for update_crm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcoord.kafka import TopicNames
from tests.integration.e2e import (
    SDK_WARNINGS,
    Stack,
    assert_one_action_per_call,
    launch,
    turns,
)
from tests.integration.test_executor_faults import kill_then_restart

pytestmark = [pytest.mark.integration, pytest.mark.fault, *SDK_WARNINGS]


def test_kill_9_of_the_tool_executor_after_an_mcp_tool_acted(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> None:
    env = {"tools-exec": {"RUNCOORD_FAULT_AT": "kill@tool.after_send:3"}}
    with launch(bootstrap, pg_dsn, topics, tmp_path, env, tools_via="mcp") as stack:
        runs = turns(6, "mcp-kill")
        stack.start_turns(runs)
        kill_then_restart(stack, "tools-exec", "tool.after_send", set(runs))
        assert_one_action_per_call(stack, set(runs))
        assert_all_came_over_mcp(stack, set(runs))


def test_a_stream_dropped_after_the_tool_acted_leaves_one_action(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> None:
    with launch(bootstrap, pg_dsn, topics, tmp_path, tools_via="mcp") as stack:
        # Every create_ticket (key-honouring) and update_crm (lookup) acts, then its stream is
        # cut before the answer: the executor must not act a second time on either. (A
        # key-honouring tool's repeat is answered from its records, without a cut.)
        drop = {"drop_after_act": {"rate": 1.0}}
        stack.gateway_faults({"seed": 7, "tools": {"create_ticket": drop, "update_crm": drop}})
        runs = turns(6, "mcp-drop")
        stack.start_turns(runs)
        finished = stack.wait_finished(set(runs), timeout=150)
        assert {r: s for r, (s, _) in finished.items()} == dict.fromkeys(runs, "completed")
        assert_one_action_per_call(stack, set(runs))
        assert_all_came_over_mcp(stack, set(runs))
        fired = stack.gateway_fired()
        assert fired.get("create_ticket.drop_after_act") and fired.get("update_crm.drop_after_act")


def assert_all_came_over_mcp(stack: Stack, runs: set[str]) -> None:
    """Every tool request of ``runs`` (reads and lookups' calls aside) reached the sandbox by
    its MCP endpoint: none fell back to HTTP."""
    arrivals = stack.arrivals(runs)
    tools = {a["tool"] for a in arrivals}
    assert {"create_ticket", "lookup_customer", "update_crm"} <= tools, tools
    assert {a["via"] for a in arrivals} == {"mcp"}

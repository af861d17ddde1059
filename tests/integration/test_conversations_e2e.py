"""The agent API owns conversations: a turn on a conversation id the provider has never seen
gets a provider thread (Assistants) or conversation (Responses) created once, by the provider
executor under the ledger; the next turn of the conversation runs in the same one; two tenants'
conversations of the same name get one each; a kill -9 while creating it leaves exactly one.
The simulator's own records are the proof."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from runcoord.api import tenants
from runcoord.api.keys import create
from runcoord.kafka import TopicNames
from tests.integration.e2e import SDK_WARNINGS, Stack, launch, script
from tests.integration.test_executor_faults import kill_then_restart

pytestmark = [pytest.mark.integration, *SDK_WARNINGS]

TURN = script([("lookup_order", {"order_id": "o-1"})])


def post(stack: Stack, key: str, thread: str, protocol: str, assistant: str) -> str:
    answer = httpx.post(
        f"{stack.api}/v1/threads/{thread}/turns",
        json={
            "input": "where is my order?",
            "provider": protocol,
            "assistant_id": assistant,
            "metadata": {"sim_script": json.dumps(TURN)},
        },
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["run_id"])


def completes(stack: Stack, run_id: str) -> None:
    finished = stack.wait_finished({run_id}, timeout=120)
    assert finished.get(run_id) == ("completed", ""), finished.get(run_id)


def containers_of(stack: Stack, conversation: str) -> list[dict[str, Any]]:
    return [
        c
        for c in stack.records()["containers"]
        if c["metadata"].get("runcoord_conversation") == conversation
    ]


def runs_in(stack: Stack, run_ids: set[str]) -> set[str]:
    """The provider containers our runs were created in (from the simulator's records)."""
    return {r["container_id"] for r in stack.records()["runs"] if r["our_run_id"] in run_ids}


def keys(pg_dsn: str, assistant: str, *tenant_names: str) -> list[str]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        made = []
        for tenant in tenant_names:
            made.append(create(conn, tenant))
            tenants.allow(conn, tenant, assistant)
        return made


@pytest.mark.parametrize("protocol", ["assistants", "responses"])
def test_a_new_conversation_gets_one_provider_thread_and_keeps_it(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path, protocol: str
) -> None:
    with launch(bootstrap, pg_dsn, topics, tmp_path, api=True) as stack:
        assistant = stack.assistant_id if protocol == "assistants" else "sim-1"
        tag = uuid.uuid4().hex[:8]
        key_a, key_b = keys(pg_dsn, assistant, f"ta-{tag}", f"tb-{tag}")
        conversation = f"support-{tag}"  # never seen by the provider
        first = post(stack, key_a, conversation, protocol, assistant)
        completes(stack, first)
        second = post(stack, key_a, conversation, protocol, assistant)
        completes(stack, second)
        other = post(stack, key_b, conversation, protocol, assistant)  # same name, tenant B
        completes(stack, other)

        made = containers_of(stack, conversation)
        assert len(made) == 2, made  # one per tenant, whatever the number of turns
        assert len(runs_in(stack, {first, second})) == 1  # both turns in A's one thread
        assert runs_in(stack, {first, second}) != runs_in(stack, {other})

        shown = httpx.get(
            f"{stack.api}/v1/threads/{conversation}",
            headers={"Authorization": f"Bearer {key_a}"},
            timeout=10,
        ).json()
        assert [t["id"] for t in shown["provider_threads"]] == list(runs_in(stack, {first}))
        assert {r["run_id"] for r in shown["runs"]} == {first, second}


def test_a_kill_while_creating_the_thread_leaves_one(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> None:
    point = "provider.after_create_thread"
    env = {"provider-exec": {"RUNCOORD_FAULT_AT": f"kill@{point}:1"}}
    with launch(bootstrap, pg_dsn, topics, tmp_path, env, api=True) as stack:
        tag = uuid.uuid4().hex[:8]
        (key,) = keys(pg_dsn, stack.assistant_id, f"tk-{tag}")
        conversation = f"killed-{tag}"
        run_id = post(stack, key, conversation, "assistants", stack.assistant_id)
        # Dies after the provider made the thread and before the ledger knew; restarted, it
        # asks again with the same key and gets that thread back.
        kill_then_restart(stack, "provider-exec", point, {run_id})
        made = containers_of(stack, conversation)
        assert len(made) == 1 and made[0]["replays"] == 1, made
        assert runs_in(stack, {run_id}) == {made[0]["id"]}

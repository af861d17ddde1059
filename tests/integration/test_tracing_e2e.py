"""One turn's trace, across real processes: API → relay → coordinator → executors → gateway.

Every process writes its finished spans to its own file (RUNCOORD_OTEL_EXPORTER=file:…). The
turn is posted to the agent API over HTTP; once its run has completed, the spans of every
service that touched it must form one trace whose parent links lead from the gateway's span
back to the API's request span.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from runcoord.api import tenants
from runcoord.api.keys import create
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from tests.integration.e2e import SDK_WARNINGS, Stack, launch, script

pytestmark = [pytest.mark.integration, *SDK_WARNINGS]

PROCESSES = ("api", "relay", "coordinator", "provider-exec", "tools-exec", "submit-exec")
PROCESSES += ("gateway", "provider-sim")
API, GATEWAY = "runcoord-api", "runcoord-gateway"
COORDINATOR, TOOLS = "runcoord-coordinator", "runcoord-executor-tools"


@pytest.fixture
def traced(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> Iterator[tuple[Stack, Path]]:
    folder = tmp_path / "spans"
    env = {p: {"RUNCOORD_OTEL_EXPORTER": f"file:{folder}/spans-{p}.jsonl"} for p in PROCESSES}
    with launch(bootstrap, pg_dsn, topics, tmp_path, env, api=True) as stack:
        yield stack, folder


def read_spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(folder.glob("spans-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.endswith("}"):  # a line being written is skipped, read next time
                spans.append(json.loads(line))
    return spans


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chain = [span]
    while chain[-1]["parent_span_id"] is not None:
        parent = by_id.get(chain[-1]["parent_span_id"])
        if parent is None:
            break  # a link to a span nobody wrote: the chain is broken here
        chain.append(parent)
    return chain


def test_one_turn_is_one_trace_from_the_api_to_the_gateway(
    traced: tuple[Stack, Path], pg_dsn: str
) -> None:
    stack, folder = traced
    assert stack.api is not None
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        key = create(conn, "t1")  # t1 may use the write tools (tools.yaml)
        tenants.allow(conn, "t1", stack.assistant_id)  # an assistant t1's turns may name
    thread = (
        f"traced-{uuid.uuid4().hex[:8]}"  # the tenant's conversation; runcoord makes its thread
    )
    turn = script([("create_ticket", {"subject": "a traced ticket"})])
    answer = httpx.post(
        f"{stack.api}/v1/threads/{thread}/turns",
        json={
            "input": "open a ticket",
            "assistant_id": stack.assistant_id,
            "metadata": {"sim_script": json.dumps(turn)},
        },
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    finished = stack.wait_finished({run_id}, timeout=120)
    assert finished == {run_id: ("completed", "")}

    found: dict[str, Any] = {}

    def chain_complete() -> str | None:
        spans = read_spans(folder)
        by_id = {s["span_id"]: s for s in spans}
        ours = [s for s in spans if s["attributes"].get("run_id") == run_id]
        requests = [s for s in ours if s["service"] == API and s["kind"] == "SERVER"]
        calls = [s for s in ours if s["service"] == GATEWAY and s["kind"] == "SERVER"]
        if not requests or not calls:
            return f"{len(requests)} API request spans, {len(calls)} gateway spans"
        chain = ancestors(calls[0], by_id)
        if chain[-1] is not requests[0]:
            return f"the gateway span's ancestors end at {chain[-1]['service']} {chain[-1]['name']}"
        found.update(request=requests[0], chain=chain, ours=ours, by_id=by_id)
        return None

    wait_until(chain_complete, timeout=30, what="the gateway span's chain up to the API span")
    request, chain = found["request"], found["chain"]
    trace_id = request["trace_id"]
    assert request["name"] == "POST /v1/threads/{thread_id}/turns"
    assert request["parent_span_id"] is None  # the client sent no traceparent: a new trace
    assert {s["trace_id"] for s in chain} == {trace_id}
    services = [s["service"] for s in reversed(chain)]
    assert services[:3] == [API, "runcoord-relay", COORDINATOR], services
    assert services[-2:] == [TOOLS, GATEWAY], services
    assert {"runcoord-executor-provider"} <= set(services)
    tool_span = chain[1]
    assert tool_span["name"] == "tools tool_call"
    assert tool_span["attributes"]["kind"] == "tool_call"
    assert tool_span["attributes"]["tool"] == "create_ticket"
    shown = httpx.get(
        f"{stack.api}/v1/threads/{thread}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    (provider_thread,) = shown["provider_threads"]
    assert tool_span["attributes"]["thread_id"] == provider_thread["id"]  # the provider's
    assert chain[0]["attributes"]["effect_key"] == tool_span["attributes"]["effect_key"]

    # Everything that carried this run is in that one trace, back through the coordinator to
    # the submission and the run's end; only a coordinator timer starts its own trace.
    by_id = found["by_id"]
    outside = [
        (s["service"], s["name"])
        for s in found["ours"]
        if s["trace_id"] != trace_id and ancestors(s, by_id)[-1]["name"] != "coordinator tick"
    ]
    assert outside == []
    in_trace = {s["service"] for s in found["ours"] if s["trace_id"] == trace_id}
    assert {API, COORDINATOR, TOOLS, GATEWAY, "runcoord-executor-submissions"} <= in_trace
    applied = {s["attributes"].get("input") for s in found["ours"] if s["trace_id"] == trace_id}
    # (No RunObserved needed: the streamed create and submission carry what they saw of the
    # run, RunCreated.seen and SubmissionResult.seen; a watch reports only what they missed.)
    assert {"StartRun", "RunCreated", "ToolResult", "SubmissionResult"} <= applied
    # Ids, never payloads: the ticket's subject is nowhere in any span.
    assert "a traced ticket" not in json.dumps(read_spans(folder))

"""The tool executor against the real sandbox gateway (`runcoord sim tools`, its own database):
a slow gateway must not make a lookup-reconciled tool act twice. The verdict is the sandbox's
audit log (sandbox_audit), never what the executor says."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import EffectState, InMemoryLedger
from runcoord.registry import Registry
from runcoord.tools.executor import MAYBE_ACTED, ToolCalls
from runcoord.tools.http_gateway import HttpToolGateway
from tests.integration.tools.sandbox import Sandbox
from tests.tool_gateway_contract import ARGS, SPECS

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# update_crm with a shorter timeout than tools.yaml's, to keep the test short: the sandbox
# knows no timeouts, only the deadline each request carries.
TIMEOUT_MS = 500
REGISTRY = Registry(
    tools={**SPECS, "update_crm": SPECS["update_crm"].model_copy(update={"timeout_ms": TIMEOUT_MS})}
)
HELD_MS = 1500  # the latency fault: how long the gateway holds a request before acting on it


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as client:
        yield client
        await client.post("/_sim/faults", json={})


def intent(step_s: float) -> it.ToolCallIntent:
    return it.ToolCallIntent(
        effect_key=f"eff-{uuid.uuid4().hex}",
        run_id=f"run-{uuid.uuid4().hex[:12]}",
        tenant="t1",
        thread_id="th-1",
        provider="responses",
        step_id="step-1",
        tool_call_id=f"call-{uuid.uuid4().hex[:6]}",
        tool="update_crm",
        arguments=json.dumps(ARGS["update_crm"]),
        deadline_ms=int((time.time() + step_s) * 1000),
    )


async def set_faults(http: httpx.AsyncClient, faults: dict[str, Any]) -> None:
    response = await http.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


async def first_arrival(http: httpx.AsyncClient, run_id: str) -> float:
    """When the run's first request reached the gateway."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        arrivals = (await http.get("/_sim/arrivals")).json()["arrivals"]
        ours = [a["at"] for a in arrivals if a["run_id"] == run_id]
        if ours:
            return float(ours[0])
        await asyncio.sleep(0.01)
    raise AssertionError("the request never reached the gateway")


async def audit(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await http.get("/_sim/audit", params={"run_id": run_id, "tool": "update_crm"})
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


async def run(
    sandbox: Sandbox, http: httpx.AsyncClient, call: it.ToolCallIntent, ledger: InMemoryLedger
) -> tuple[inp.ToolResult, float]:
    """Run the call while the gateway holds its first request; the fault is lifted as soon
    as that request is at the gateway (a request sent again is not held). Returns the
    result and when the first request arrived."""
    await set_faults(http, {"tools": {"update_crm": {"latency": {"rate": 1.0, "ms": HELD_MS}}}})
    async with httpx.AsyncClient() as client:
        calls = ToolCalls(
            REGISTRY,
            HttpToolGateway(f"http://{sandbox.proxy.url_netloc}", client),
            LedgerGuard(ledger, "exec-it"),
        )
        task = asyncio.create_task(calls(call))
        arrived = await first_arrival(http, call.run_id)
        await set_faults(http, {})
        reports = await task
    result = reports[0]
    assert isinstance(result, inp.ToolResult)
    # The held request reaches update_crm HELD_MS after it arrived: wait until it has.
    await asyncio.sleep(max(0.0, arrived + HELD_MS / 1000 + 0.5 - time.time()))
    return result, arrived


async def test_a_slow_gateway_does_not_make_update_crm_act_twice(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    """The first request times out while the gateway holds it; the lookup finds nothing
    (it has not acted yet). Sending again then would make two actions once the held request
    goes on. The held request reaches the tool past its deadline and is refused; the executor
    sends again only once that deadline has passed: one action."""
    call, ledger = intent(step_s=30), InMemoryLedger()
    result, _ = await run(sandbox, http, call, ledger)
    rows = await audit(http, call.run_id)
    assert len(rows) == 1, f"update_crm acted {len(rows)} times for one tool call"
    assert not result.is_error
    assert json.loads(result.output)["crm_update_id"] == f"crm-{rows[0]['id']:07d}"
    record = ledger.get(call.effect_key)
    assert record is not None and record.state is EffectState.SUCCEEDED


async def test_when_the_step_deadline_comes_first_update_crm_is_not_sent_again(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    call, ledger = intent(step_s=1.0), InMemoryLedger()
    result, _ = await run(sandbox, http, call, ledger)
    assert result.is_error and json.loads(result.output)["error"]["type"] == "unknown_outcome"
    assert MAYBE_ACTED in result.output
    arrivals = (await http.get("/_sim/arrivals")).json()["arrivals"]
    assert [a["run_id"] for a in arrivals].count(call.run_id) == 1, "never sent again"
    assert await audit(http, call.run_id) == [], "the held request came too late to act"
    record = ledger.get(call.effect_key)
    assert record is not None and record.state is EffectState.UNKNOWN


async def test_a_slow_success_is_answered_from_the_lookup_before_the_timeout(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    """update_crm acts at once and answers 3 s later (past tools.yaml's 2 s timeout). The
    lookup, asked beside the slow request, finds the action: its answer is the call's,
    long before the request would time out, and nothing is sent again."""
    slow = Registry(tools=SPECS)  # tools.yaml's own 2 s timeout
    await set_faults(http, {"tools": {"update_crm": {"slow_success": {"rate": 1.0, "ms": 3000}}}})
    call, ledger = intent(step_s=30), InMemoryLedger()
    async with httpx.AsyncClient() as client:
        calls = ToolCalls(
            slow,
            HttpToolGateway(f"http://{sandbox.proxy.url_netloc}", client),
            LedgerGuard(ledger, "exec-it"),
            lookup_after_s=0.2,
        )
        began = time.monotonic()
        (result, *_) = await calls(call)
        took = time.monotonic() - began
    assert isinstance(result, inp.ToolResult) and not result.is_error
    rows = await audit(http, call.run_id)
    assert len(rows) == 1
    assert json.loads(result.output)["crm_update_id"] == f"crm-{rows[0]['id']:07d}"
    assert took < SPECS["update_crm"].timeout_ms / 1000, f"waited {took:.2f} s: the timeout"
    arrivals = (await http.get("/_sim/arrivals")).json()["arrivals"]
    assert [a["run_id"] for a in arrivals].count(call.run_id) == 1, "never sent again"


async def test_a_key_tool_slow_to_answer_is_sent_again_with_its_key_and_acts_once(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    """create_ticket acts at once and answers 3 s later. A second request with the same
    Idempotency-Key, sent beside the slow one, is answered with the first result: one
    ticket, and the answer long before the request's 2 s timeout."""
    await set_faults(
        http, {"tools": {"create_ticket": {"slow_success": {"rate": 1.0, "ms": 3000}}}}
    )
    call = replace(
        intent(step_s=30), tool="create_ticket", arguments=json.dumps(ARGS["create_ticket"])
    )
    async with httpx.AsyncClient() as client:
        calls = ToolCalls(
            Registry(tools=SPECS),
            HttpToolGateway(f"http://{sandbox.proxy.url_netloc}", client),
            LedgerGuard(InMemoryLedger(), "exec-it"),
            hedge_after_ms=200,
        )
        began = time.monotonic()
        (result, *_) = await calls(call)
        took = time.monotonic() - began
    assert isinstance(result, inp.ToolResult) and not result.is_error
    response = await http.get("/_sim/audit", params={"run_id": call.run_id})
    rows = response.json()["rows"]
    assert len(rows) == 1, f"create_ticket acted {len(rows)} times for one call"
    assert took < SPECS["create_ticket"].timeout_ms / 1000, f"waited {took:.2f} s: the timeout"
    arrivals = (await http.get("/_sim/arrivals")).json()["arrivals"]
    assert [a["run_id"] for a in arrivals].count(call.run_id) >= 2, "sent again beside it"

"""The tool executor's decisions, against the in-memory gateway and the in-memory ledger.

The gateway only reports what happened; the executor decides from the registry what an
unknown outcome means (read: send again; key: send again with the same key; lookup:
reconcile; none: record `unknown` and say so). Every test judges by the fake's audit and
arrivals (what the tools did and were asked), and by the ledger.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from runcoord.deadletter import DeadLetter
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import Acquired, EffectMeta, EffectState, InMemoryLedger, request_hash
from runcoord.registry import Registry, ToolSpec
from runcoord.sim.tools.catalog import TOOLS
from runcoord.tools.executor import MAYBE_ACTED, ToolCalls
from runcoord.tools.gateway import LookupUnavailable
from runcoord.tools.memory_gateway import MemoryToolGateway, Responder
from tests.tool_gateway_contract import ARGS, SPECS

pytestmark = pytest.mark.anyio

REGISTRY = Registry(tools=SPECS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sandbox_answers(spec: ToolSpec, arguments: dict[str, Any], audit_id: int | None) -> Any:
    """What the sandbox's tools answer (outputs that fit tools.yaml's output_schema)."""
    tool = TOOLS[spec.name]
    return tool.respond(tool.args.model_validate(arguments), audit_id)


class World:
    def __init__(self, respond: Responder = sandbox_answers) -> None:
        self.gateway = MemoryToolGateway.of(SPECS.values(), respond)
        self.ledger = InMemoryLedger()
        self.calls = ToolCalls(REGISTRY, self.gateway, LedgerGuard(self.ledger, "exec-1"))

    def intent(
        self, tool: str, arguments: str | None = None, tenant: str = "t1"
    ) -> it.ToolCallIntent:
        return it.ToolCallIntent(
            effect_key=f"eff-{uuid.uuid4().hex}",
            run_id="run-1",
            tenant=tenant,
            thread_id="th-1",
            provider="responses",
            step_id="step-1",
            tool_call_id=f"call-{uuid.uuid4().hex[:6]}",
            tool=tool,
            arguments=json.dumps(ARGS[tool]) if arguments is None else arguments,
            deadline_ms=int(time.time() * 1000) + 60_000,
        )

    async def run(self, intent: it.ToolCallIntent) -> inp.ToolResult:
        reports = await self.calls(intent)
        assert isinstance(reports[0], inp.ToolResult)
        return reports[0]

    def sent_before(self, intent: it.ToolCallIntent) -> None:
        """An earlier executor claimed the effect, marked it sent, and died."""
        claim = self.ledger.claim(intent.effect_key, _meta(intent), "dead-exec", 30.0)
        assert isinstance(claim, Acquired)
        assert self.ledger.mark_sent(intent.effect_key, claim.token)
        self.ledger.expire_lease(intent.effect_key)

    def state(self, intent: it.ToolCallIntent) -> EffectState:
        record = self.ledger.get(intent.effect_key)
        assert record is not None
        return record.state

    def arrivals(self, intent: it.ToolCallIntent) -> int:
        return sum(a.effect_key == intent.effect_key for a in self.gateway.arrivals)


def _meta(intent: it.ToolCallIntent) -> EffectMeta:
    return EffectMeta(
        kind="tool_call",
        tenant=intent.tenant,
        run_id=intent.run_id,
        step_id=intent.step_id,
        tool_call_id=intent.tool_call_id,
        request_hash=request_hash({"tool": intent.tool, "arguments": intent.arguments}),
    )


def error_type(result: inp.ToolResult) -> str:
    return str(json.loads(result.output)["error"]["type"])


@pytest.fixture
def world() -> World:
    return World()


async def test_a_write_acts_once_and_a_redelivery_replays_the_ledger(world: World) -> None:
    intent = world.intent("create_ticket")
    first = await world.run(intent)
    (action,) = world.gateway.actions(intent.effect_key)
    assert not first.is_error and json.loads(first.output) == action.response
    assert (action.fencing_token, action.tool_call_id) == (1, intent.tool_call_id)
    assert world.state(intent) is EffectState.SUCCEEDED
    again = await world.run(intent)
    assert again == first and world.arrivals(intent) == 1


async def test_a_key_tool_after_a_lost_answer_is_resent_with_the_same_key(world: World) -> None:
    world.gateway.arm("drop_after_act", "charge_card", times=1)
    intent = world.intent("charge_card")
    result = await world.run(intent)
    (action,) = world.gateway.actions(intent.effect_key)
    assert world.arrivals(intent) == 2, "sent again, with the same key"
    assert not result.is_error and json.loads(result.output) == action.response


async def test_a_lookup_tool_after_a_lost_answer_is_reconciled_not_resent(world: World) -> None:
    world.gateway.arm("drop_after_act", "update_crm", times=1)
    intent = world.intent("update_crm")
    result = await world.run(intent)
    (action,) = world.gateway.actions(intent.effect_key)
    assert world.arrivals(intent) == 1, "the lookup found the action: not sent again"
    assert not result.is_error and json.loads(result.output) == action.response
    assert world.state(intent) is EffectState.SUCCEEDED


async def test_a_lookup_that_finds_nothing_makes_sending_safe(world: World) -> None:
    intent = world.intent("update_crm")
    world.sent_before(intent)  # it died before the request left: the tool never acted
    result = await world.run(intent)
    (action,) = world.gateway.actions(intent.effect_key)
    assert not result.is_error and action.fencing_token == 2


async def test_a_lookup_that_cannot_be_asked_never_sends(world: World) -> None:
    intent = world.intent("update_crm")
    world.sent_before(intent)
    world.gateway.arm("unreachable", "update_crm")
    with pytest.raises(LookupUnavailable):
        await world.calls(intent)
    assert world.arrivals(intent) == 0
    assert world.state(intent) is EffectState.CLAIMED, "released for a retry, not final"
    world.gateway.disarm()
    assert not (await world.run(intent)).is_error
    assert len(world.gateway.actions(intent.effect_key)) == 1


@pytest.mark.parametrize("fault", ["drop_after_act", "error_before_act"])
async def test_a_tool_without_key_or_lookup_is_never_resent_after_an_unknown_outcome(
    world: World, fault: Any
) -> None:
    world.gateway.arm(fault, "post_note", times=1)
    intent = world.intent("post_note")
    result = await world.run(intent)
    assert world.arrivals(intent) == 1
    assert len(world.gateway.actions(intent.effect_key)) == (1 if fault == "drop_after_act" else 0)
    assert result.is_error and error_type(result) == "unknown_outcome"
    assert MAYBE_ACTED in result.output
    assert world.state(intent) is EffectState.UNKNOWN


async def test_after_a_crash_after_sending_such_a_tool_is_not_sent_at_all(world: World) -> None:
    intent = world.intent("post_note")
    world.sent_before(intent)
    result = await world.run(intent)
    assert world.arrivals(intent) == 0
    assert error_type(result) == "unknown_outcome"
    assert world.state(intent) is EffectState.UNKNOWN


async def test_a_read_is_sent_again_until_it_answers(world: World) -> None:
    world.gateway.arm("error_before_act", "search_kb", times=2)
    intent = world.intent("search_kb")
    result = await world.run(intent)
    assert world.arrivals(intent) == 3 and not result.is_error
    assert world.gateway.audit == []


@pytest.mark.parametrize("fault", ["unreachable", "throttle", "error_before_act"])
async def test_a_key_write_not_acted_on_is_sent_again_and_acts_once(
    world: World, fault: Any
) -> None:
    world.gateway.arm(fault, "send_email", times=1)
    intent = world.intent("send_email")
    result = await world.run(intent)
    assert not result.is_error
    assert len(world.gateway.actions(intent.effect_key)) == 1


async def test_a_refusal_is_the_tools_error_not_a_retry(world: World) -> None:
    intent = world.intent("charge_card", json.dumps({"customer_id": "c-1"}))
    result = await world.run(intent)
    assert result.is_error and error_type(result) == "tool_error"
    assert "HTTP 422" in json.loads(result.output)["error"]["message"]
    assert world.arrivals(intent) == 1 and world.gateway.audit == []


async def test_arguments_that_are_not_json_are_never_sent(world: World) -> None:
    intent = world.intent("create_ticket", "{not json")
    result = await world.run(intent)
    assert error_type(result) == "invalid_arguments" and world.arrivals(intent) == 0


async def test_a_tool_not_enabled_for_the_tenant_is_refused_before_the_ledger(
    world: World,
) -> None:
    intent = world.intent("charge_card", tenant="t5")
    result = await world.run(intent)
    assert error_type(result) == "not_enabled" and world.arrivals(intent) == 0
    assert world.ledger.get(intent.effect_key) is None


async def test_an_answer_intake_refuses_goes_to_the_dead_letters() -> None:
    world = World(lambda spec, args, n: {"ticket_id": "bogus"})
    intent = world.intent("create_ticket")
    reports = await world.calls(intent)
    result, dead = reports
    assert isinstance(result, inp.ToolResult) and isinstance(dead, DeadLetter)
    assert result.is_error and error_type(result) == "invalid_output"
    assert dead.payload == b'{"ticket_id":"bogus"}'
    assert len(world.gateway.actions(intent.effect_key)) == 1

"""The tool executor's decisions, against the in-memory gateway and the in-memory ledger.

The gateway only reports what happened; the executor decides from the registry what an
unknown outcome means (read: send again; key: send again with the same key; lookup:
reconcile; none: record `unknown` and say so). Every test judges by the fake's audit and
arrivals (what the tools did and were asked), and by the ledger.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from runcoord.deadletter import DeadLetter
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LeaseLost, LedgerGuard
from runcoord.effects.ledger import Acquired, EffectMeta, EffectState, InMemoryLedger, request_hash
from runcoord.registry import Registry, ToolSpec
from runcoord.sim.tools.catalog import TOOLS
from runcoord.tools.executor import MAYBE_ACTED, ToolCalls
from runcoord.tools.gateway import OutcomeUnknown
from runcoord.tools.memory_gateway import MemoryToolGateway, Refusal, Responder
from tests.fake_time import FakeTime
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
    """One fake clock for the gateway, the ledger and the executor: nothing really sleeps."""

    def __init__(self, respond: Responder = sandbox_answers) -> None:
        self.time = FakeTime(time.time())
        self.gateway = MemoryToolGateway.of(SPECS.values(), respond, clock=self.time)
        self.ledger = InMemoryLedger(clock=self.time)
        self.calls = self.executor("exec-1")

    def executor(self, owner: str) -> ToolCalls:
        guard = LedgerGuard(self.ledger, owner)
        return ToolCalls(REGISTRY, self.gateway, guard, clock=self.time, sleep=self.time.sleep)

    def now_ms(self) -> int:
        return int(self.time() * 1000)

    def intent(
        self, tool: str, arguments: str | None = None, tenant: str = "t1", step_s: float = 60
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
            deadline_ms=int((self.time() + step_s) * 1000),
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


async def test_a_lookup_that_cannot_be_asked_is_asked_again_and_never_sends(
    world: World,
) -> None:
    intent = world.intent("update_crm")
    world.sent_before(intent)
    world.gateway.arm("unreachable", "update_crm", times=3)
    result = await world.run(intent)
    assert not result.is_error
    assert world.arrivals(intent) == 1, "sent once, after the lookup answered"
    (action,) = world.gateway.actions(intent.effect_key)
    assert action.fencing_token == 2


async def test_a_lookup_that_cannot_be_asked_stops_at_the_step_deadline(world: World) -> None:
    """Finding 1: the LookupUnavailable loop went on past the step deadline."""
    intent = world.intent("update_crm", step_s=10)
    world.sent_before(intent)
    world.gateway.arm("unreachable", "update_crm")
    result = await world.run(intent)
    assert result.is_error and error_type(result) == "unknown_outcome"
    assert MAYBE_ACTED in result.output
    assert world.arrivals(intent) == 0, "never sent while the lookup could not be asked"
    assert world.state(intent) is EffectState.UNKNOWN
    assert intent.deadline_ms <= world.now_ms() <= intent.deadline_ms + 2_500


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


# ---- finding 1: an empty lookup is not proof of no action ------------------------------------


async def test_a_slow_lookup_tool_is_not_sent_again_while_its_request_may_still_act(
    world: World,
) -> None:
    """update_crm's request times out but is still on its way (the gateway is slow, not
    dead): it acts 0.5 s later. The lookup finds nothing at first; the executor must not
    send again before the request's deadline has passed."""
    world.gateway.arm("slow", "update_crm", times=1, delay_s=0.5)
    intent = world.intent("update_crm")
    result = await world.run(intent)
    world.gateway.flush()  # whatever is still on its way arrives now
    actions = world.gateway.actions(intent.effect_key)
    assert len(actions) == 1, f"{len(actions)} actions for one tool call"
    assert world.arrivals(intent) == 1, "not sent again"
    assert not result.is_error and json.loads(result.output) == actions[0].response
    assert world.state(intent) is EffectState.SUCCEEDED


async def test_a_slow_request_past_its_deadline_is_refused_and_only_then_sent_again(
    world: World,
) -> None:
    world.gateway.arm("slow", "update_crm", times=1, delay_s=5.0)
    intent = world.intent("update_crm")
    result = await world.run(intent)
    world.gateway.flush()
    first, second = [a for a in world.gateway.arrivals if a.effect_key == intent.effect_key]
    assert second.deadline_ms > first.deadline_ms
    sent_again_at = second.deadline_ms - SPECS["update_crm"].timeout_ms
    assert sent_again_at >= first.deadline_ms + 1000, "sent again only once the first expired"
    (action,) = world.gateway.actions(intent.effect_key)
    assert not result.is_error and json.loads(result.output) == action.response
    assert [r.reason for r in world.gateway.refused] == ["deadline_exceeded"]


async def test_when_the_step_deadline_comes_first_the_outcome_stays_unknown(
    world: World,
) -> None:
    world.gateway.arm("slow", "update_crm", times=1, delay_s=30.0)
    intent = world.intent("update_crm", step_s=1.5)
    result = await world.run(intent)
    assert result.is_error and error_type(result) == "unknown_outcome"
    assert MAYBE_ACTED in result.output
    assert world.arrivals(intent) == 1, "never sent again"
    assert world.state(intent) is EffectState.UNKNOWN
    world.gateway.flush()
    assert world.gateway.actions(intent.effect_key) == []


async def test_after_a_take_over_the_predecessors_request_may_still_act(world: World) -> None:
    """The dead executor's request is still on its way when its successor looks it up."""
    intent = world.intent("update_crm")
    claim = world.ledger.claim(intent.effect_key, _meta(intent), "dead-exec", 30.0)
    assert isinstance(claim, Acquired) and world.ledger.mark_sent(intent.effect_key, claim.token)
    world.gateway.arm("slow", "update_crm", times=1, delay_s=1.0)
    with pytest.raises(OutcomeUnknown):
        await world.gateway.call(
            SPECS["update_crm"],
            ARGS["update_crm"],
            effect_key=intent.effect_key,
            fencing_token=claim.token,
            tenant=intent.tenant,
            run_id=intent.run_id,
            tool_call_id=intent.tool_call_id,
        )
    world.ledger.expire_lease(intent.effect_key)
    result = await world.run(intent)
    world.gateway.flush()
    (action,) = world.gateway.actions(intent.effect_key)
    assert action.fencing_token == 1, "the predecessor's request acted; ours was never sent"
    assert not result.is_error and json.loads(result.output) == action.response


async def test_more_than_one_action_for_one_key_is_reported_not_hidden(world: World) -> None:
    intent = world.intent("update_crm")
    for token in (1, 1):
        await world.gateway.call(
            SPECS["update_crm"],
            ARGS["update_crm"],
            effect_key=intent.effect_key,
            fencing_token=token,
            tenant=intent.tenant,
            run_id=intent.run_id,
            tool_call_id=intent.tool_call_id,
        )
    world.sent_before(intent)
    reports = await world.calls(intent)
    result = reports[0]
    assert isinstance(result, inp.ToolResult)
    assert result.is_error and error_type(result) == "duplicate_action"
    assert "2 times" in json.loads(result.output)["error"]["message"]
    assert len(world.gateway.actions(intent.effect_key)) == 2, "no third"
    assert world.arrivals(intent) == 2
    (dead,) = [r for r in reports if isinstance(r, DeadLetter)]
    assert dead.kind == "duplicate_action" and intent.effect_key in dead.reason
    assert len(json.loads(dead.payload)["actions"]) == 2
    again = await world.calls(intent)
    assert again == [result], "reported once: a redelivery replays the ledger"


# ---- finding 2: fencing at the tool ---------------------------------------------------------


async def test_the_older_holders_late_request_is_refused_and_it_records_nothing(
    world: World,
) -> None:
    """Executor A's request is in flight when its lease lapses and B takes the effect over
    (a lost heartbeat, a pause). B's request reaches the tool first; A's arrives late with
    the older token and is refused without acting; A stops and records nothing."""
    intent = world.intent("create_ticket")
    a, b = world.executor("exec-a"), world.executor("exec-b")
    world.gateway.arm("hold", "create_ticket", times=1)
    a_task = asyncio.create_task(a(intent))
    while world.gateway.holding == 0:
        await asyncio.sleep(0)
    world.ledger.expire_lease(intent.effect_key)
    b_reports = await b(intent)
    b_result = b_reports[0]
    assert isinstance(b_result, inp.ToolResult) and not b_result.is_error
    world.gateway.release()
    with pytest.raises(LeaseLost):
        await a_task
    (action,) = world.gateway.actions(intent.effect_key)
    assert action.fencing_token == 2 and json.loads(b_result.output) == action.response
    assert [(r.fencing_token, r.reason) for r in world.gateway.refused] == [(1, "fenced")]
    record = world.ledger.get(intent.effect_key)
    assert record is not None and record.state is EffectState.SUCCEEDED
    assert record.result == {"output": b_result.output, "is_error": False, "rejection": None}
    assert isinstance(world.gateway.refused[0], Refusal)


def hurried() -> World:
    """A world whose executor hedges and looks aside after 10 ms (real time) instead of 0.5 s."""
    world = World()
    world.calls.hedge_after_ms, world.calls.lookup_after_s = 10, 0.01
    return world


# ---- a slow success is found by the lookup, not waited out ---------------------------------


async def test_a_slow_answer_of_a_lookup_tool_is_found_by_its_lookup_before_the_timeout() -> None:
    world = hurried()
    world.gateway.arm("slow_answer", "update_crm", times=1)
    intent = world.intent("update_crm")
    # The answer is never released: without the lookup beside it, this would hang.
    result = await asyncio.wait_for(world.run(intent), timeout=30)
    (action,) = world.gateway.actions(intent.effect_key)
    assert not result.is_error and json.loads(result.output) == action.response
    assert world.arrivals(intent) == 1, "never sent again"
    assert world.state(intent) is EffectState.SUCCEEDED
    assert world.gateway.holding == 0, "the slow request was given up once its action was found"


async def test_a_lookup_that_finds_nothing_waits_for_the_slow_request() -> None:
    world = hurried()
    world.gateway.arm("hold", "update_crm", times=1)  # held before acting
    intent = world.intent("update_crm")
    running = asyncio.ensure_future(world.run(intent))
    while world.gateway.holding == 0:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)  # several lookups, each finding nothing
    assert not running.done() and world.arrivals(intent) == 1
    world.gateway.release()
    result = await asyncio.wait_for(running, timeout=30)
    (action,) = world.gateway.actions(intent.effect_key)
    assert not result.is_error and json.loads(result.output) == action.response
    assert world.arrivals(intent) == 1


# ---- hedged requests: a key tool's or a read's slow answer is asked for again --------------


async def test_a_key_tool_slow_to_answer_is_sent_again_beside_and_acts_once() -> None:
    world = hurried()
    world.gateway.arm("slow_answer", "charge_card", times=1)
    intent = world.intent("charge_card")
    # The first answer is never released: the hedge, with the same key, gets it replayed.
    result = await asyncio.wait_for(world.run(intent), timeout=30)
    (action,) = world.gateway.actions(intent.effect_key)
    assert not result.is_error and json.loads(result.output) == action.response
    assert world.arrivals(intent) == 2, "sent again beside the slow one, with the same key"
    assert world.gateway.holding == 0, "the slow request was dropped"


async def test_a_read_slow_to_answer_is_sent_again_beside_it() -> None:
    world = hurried()
    world.gateway.arm("hold", "lookup_customer", times=1)
    intent = world.intent("lookup_customer")
    result = await asyncio.wait_for(world.run(intent), timeout=30)
    assert not result.is_error
    assert world.arrivals(intent) == 2


async def test_a_write_without_key_or_lookup_is_never_hedged() -> None:
    world = hurried()
    world.gateway.arm("hold", "post_note", times=1)
    intent = world.intent("post_note")
    running = asyncio.ensure_future(world.run(intent))
    while world.gateway.holding == 0:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)  # ten hedge intervals
    assert world.arrivals(intent) == 1, "a write that acts on every call is sent once"
    world.gateway.release()
    result = await asyncio.wait_for(running, timeout=30)
    assert not result.is_error and len(world.gateway.actions(intent.effect_key)) == 1


async def test_a_hedge_that_is_not_sent_leaves_the_slow_request_to_answer() -> None:
    world = hurried()
    world.gateway.arm("hold", "charge_card", times=1)  # held before acting
    world.gateway.arm("throttle", "charge_card", times=2)  # both hedges refused: 429
    intent = world.intent("charge_card")
    running = asyncio.ensure_future(world.run(intent))
    while world.arrivals(intent) < 3:
        await asyncio.sleep(0.001)
    assert not running.done(), "a hedge refused says nothing about the request still out"
    world.gateway.release()
    result = await asyncio.wait_for(running, timeout=30)
    (action,) = world.gateway.actions(intent.effect_key)
    assert not result.is_error and json.loads(result.output) == action.response

"""The tool gateway contract against the in-memory fake, plus the fake's own fault knobs."""

from __future__ import annotations

import asyncio
import time

import pytest

from runcoord.tools.gateway import (
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    ToolFenced,
    ToolGateway,
)
from runcoord.tools.memory_gateway import AuditRow, MemoryToolGateway
from tests.fake_time import FakeTime
from tests.tool_gateway_contract import SPECS, ToolGatewayContract, call, new_key


class MemoryHarness:
    def __init__(self) -> None:
        self.time = FakeTime(time.time())
        self.fake = MemoryToolGateway.of(SPECS.values(), clock=self.time)
        self.gateway: ToolGateway = self.fake

    def actions(self, effect_key: str) -> list[AuditRow]:
        return self.fake.actions(effect_key)

    def lose_answers(self, tool: str) -> None:
        self.fake.arm("drop_after_act", tool)

    def fail_before_acting(self, tool: str) -> None:
        self.fake.arm("error_before_act", tool)

    def cut(self) -> None:
        self.fake.arm("unreachable")

    def heal(self) -> None:
        self.fake.disarm()

    def now(self) -> float:
        return self.time()

    def hold(self, tool: str, seconds: float) -> None:
        self.fake.arm("slow", tool, delay_s=seconds)

    async def pass_time(self, seconds: float) -> None:
        await self.time.sleep(seconds)
        self.fake.settle()


class TestMemoryToolGateway(ToolGatewayContract):
    @pytest.fixture
    def harness(self) -> MemoryHarness:
        return MemoryHarness()


# ---- what only the fake offers --------------------------------------------------------------

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def harness() -> MemoryHarness:
    return MemoryHarness()


async def test_throttle_refuses_before_acting(harness: MemoryHarness) -> None:
    harness.fake.arm("throttle", "post_note")
    key = new_key()
    with pytest.raises(NotSent, match="429"):
        await call(harness, "post_note", key)
    assert harness.actions(key) == []
    assert (await call(harness, "send_email", key)).ok, "other tools are not throttled"


async def test_a_fault_armed_for_some_times_fires_that_often(harness: MemoryHarness) -> None:
    harness.fake.arm("unreachable", "lookup_customer", times=2)
    for _ in range(2):
        with pytest.raises(NotSent):
            await call(harness, "lookup_customer", new_key())
    assert (await call(harness, "lookup_customer", new_key())).ok
    with pytest.raises(ValueError):
        harness.fake.arm("throttle", times=0)


async def test_drop_after_act_counts_only_calls_that_acted(harness: MemoryHarness) -> None:
    harness.fake.arm("drop_after_act", "create_ticket", times=1)
    key = new_key()
    refused = await call(harness, "create_ticket", key, args={})
    assert refused.status == 422, "refused before acting: nothing to lose, the fault waits"
    with pytest.raises(OutcomeUnknown, match="lost"):
        await call(harness, "create_ticket", key)
    assert (await call(harness, "create_ticket", new_key())).ok, "fired once"


async def test_every_call_that_reached_the_gateway_is_an_arrival(harness: MemoryHarness) -> None:
    key = new_key()
    await call(harness, "lookup_customer", key, run_id="run-a", tool_call_id="c-1")
    harness.cut()
    with pytest.raises(NotSent):
        await call(harness, "post_note", key)
    harness.heal()
    await call(harness, "post_note", key, token=3, run_id="run-a", tool_call_id="c-2")
    assert [(a.tool, a.tool_call_id, a.fencing_token) for a in harness.fake.arrivals] == [
        ("lookup_customer", "c-1", 1),
        ("post_note", "c-2", 3),
    ]


async def test_a_lookup_path_the_gateway_does_not_serve_is_unavailable(
    harness: MemoryHarness,
) -> None:
    spec = SPECS["update_crm"].model_copy(update={"lookup": "/tools/nope?ref={idempotency_key}"})
    with pytest.raises(LookupUnavailable):
        await harness.gateway.lookup(spec, effect_key=new_key(), tenant="t1")


async def test_answers_are_copies(harness: MemoryHarness) -> None:
    key = new_key()
    await call(harness, "update_crm", key)
    found = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t1")
    found.actions[0]["response"]["audit_id"] = -1
    assert harness.actions(key)[0].response["audit_id"] != -1


async def test_a_slow_request_acts_later_by_the_gateways_clock(harness: MemoryHarness) -> None:
    harness.fake.arm("slow", "post_note", times=1, delay_s=1.0)
    key = new_key()
    with pytest.raises(OutcomeUnknown, match="slow"):
        await call(harness, "post_note", key, deadline_ms=int((harness.now() + 5) * 1000))
    assert harness.actions(key) == [], "still on its way"
    await harness.time.sleep(0.99)
    assert harness.actions(key) == []
    await harness.time.sleep(0.01)
    assert len(harness.actions(key)) == 1, "handled when anything next looks"
    assert (await call(harness, "post_note", new_key())).ok, "fired once"


async def test_flush_handles_every_slow_request_at_its_own_time(harness: MemoryHarness) -> None:
    harness.fake.arm("slow", "update_crm", delay_s=3.0)
    key = new_key()
    for seconds in (5.0, 1.0):  # the second one's deadline passes before it reaches the tool
        with pytest.raises(OutcomeUnknown):
            await call(
                harness, "update_crm", key, deadline_ms=int((harness.now() + seconds) * 1000)
            )
    harness.fake.flush()
    assert len(harness.actions(key)) == 1
    (refusal,) = harness.fake.refused
    assert refusal.reason == "deadline_exceeded" and refusal.at == pytest.approx(harness.now() + 3)


async def test_a_held_request_waits_with_its_caller_until_released(
    harness: MemoryHarness,
) -> None:
    harness.fake.arm("hold", "create_ticket", times=1)
    key = new_key()
    task = asyncio.create_task(call(harness, "create_ticket", key))
    while harness.fake.holding == 0:
        await asyncio.sleep(0)
    assert harness.actions(key) == [] and not task.done()
    harness.fake.release()
    assert (await task).ok and harness.fake.holding == 0
    assert len(harness.actions(key)) == 1


async def test_refusals_are_recorded(harness: MemoryHarness) -> None:
    key = new_key()
    assert (await call(harness, "post_note", key, token=4)).ok
    with pytest.raises(ToolFenced) as fenced:
        await call(harness, "post_note", key, token=3)
    assert fenced.value.seen == 4
    with pytest.raises(NotSent, match="deadline"):
        await call(harness, "post_note", key, token=4, deadline_ms=int(harness.now() * 1000))
    assert [(r.fencing_token, r.reason) for r in harness.fake.refused] == [
        (3, "fenced"),
        (4, "deadline_exceeded"),
    ]

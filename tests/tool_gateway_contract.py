"""The tool gateway port's contract: one suite every adapter passes.

Test modules subclass `ToolGatewayContract` and provide a `harness` fixture: the in-memory
fake in tests/unit/tools/test_memory_gateway.py, HttpToolGateway against the real sandbox
gateway in tests/integration/tools/test_http_gateway.py. Every test judges by the gateway's
audit (what the tools really did), never by what the adapter says alone.

The tools are the product's registry (tools.yaml), which the sandbox serves.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from runcoord.registry import ToolSpec, load_registry
from runcoord.tools.gateway import (
    GatewayAnswer,
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    ToolFenced,
    ToolGateway,
)
from runcoord.tools.memory_gateway import AuditRow

SPECS: dict[str, ToolSpec] = load_registry(Path(__file__).resolve().parents[1] / "tools.yaml").tools

# Arguments each tool takes (tools.yaml `parameters`, the sandbox's catalog).
ARGS: dict[str, dict[str, Any]] = {
    "create_ticket": {"subject": "Refund not received", "customer_id": "c-1"},
    "send_email": {"to": "c-1@example.test", "subject": "About your refund"},
    "charge_card": {"customer_id": "c-1", "amount_cents": 1299, "currency": "usd"},
    "update_crm": {"customer_id": "c-1", "fields": {"status": "refunded"}},
    "post_note": {"text": "Customer called again."},
    "lookup_customer": {"customer_id": "c-1"},
    "search_kb": {"query": "refund policy", "limit": 2},
    "get_order_status": {"order_id": "o-77"},
}
KEY_TOOLS = ["create_ticket", "send_email", "charge_card"]  # idempotency: key
NO_KEY_TOOLS = ["update_crm", "post_note"]  # idempotency: none (update_crm has a lookup)
WRITES = KEY_TOOLS + NO_KEY_TOOLS
READS = ["lookup_customer", "search_kb", "get_order_status"]


class GatewayHarness(Protocol):
    gateway: ToolGateway

    def actions(self, effect_key: str) -> list[AuditRow]:
        """The gateway's audit rows for calls sent with this effect key, oldest first."""
        ...

    def lose_answers(self, tool: str) -> None:
        """From now on, when ``tool`` acts, it acts and then its answer is lost."""
        ...

    def fail_before_acting(self, tool: str) -> None:
        """From now on ``tool`` answers a server error without acting."""
        ...

    def cut(self) -> None:
        """From now on nothing reaches the gateway (calls and lookups)."""
        ...

    def heal(self) -> None:
        """Every fault off."""
        ...

    def now(self) -> float:
        """The gateway's wall clock (unix seconds): what request deadlines are read against."""
        ...

    def hold(self, tool: str, seconds: float) -> None:
        """From now on ``tool``'s requests wait ``seconds`` at the gateway before the tool
        handles them (a caller with a shorter timeout gives up first: the gateway is slow,
        not dead, and the request goes on)."""
        ...

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` of the gateway's time go by (held requests reach their tool)."""
        ...


def new_key() -> str:
    return f"eff-{uuid.uuid4().hex}"


def canonical_hash(body: Any) -> str:
    """The payload hash a gateway records: sha256 of the canonical JSON of what it received."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


async def call(
    h: GatewayHarness,
    tool: str,
    key: str,
    *,
    args: dict[str, Any] | None = None,
    spec: ToolSpec | None = None,
    token: int = 1,
    tenant: str = "t1",
    run_id: str = "run-contract",
    tool_call_id: str = "call-1",
    timeout_s: float | None = None,
    deadline_ms: int | None = None,
) -> GatewayAnswer:
    return await h.gateway.call(
        spec or SPECS[tool],
        ARGS[tool] if args is None else args,
        effect_key=key,
        fencing_token=token,
        tenant=tenant,
        run_id=run_id,
        tool_call_id=tool_call_id,
        timeout_s=timeout_s,
        deadline_ms=deadline_ms,
    )


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def body(answer: GatewayAnswer) -> Any:
    return json.loads(answer.body)


class ToolGatewayContract:
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    # ---- writes ------------------------------------------------------------------------

    @pytest.mark.parametrize("tool", KEY_TOOLS + NO_KEY_TOOLS)
    async def test_a_write_acts_once_and_answers(self, harness: GatewayHarness, tool: str) -> None:
        key = new_key()
        answer = await call(harness, tool, key)
        assert (answer.status, answer.ok, answer.replayed) == (200, True, False)
        (action,) = harness.actions(key)
        assert action.tool == tool
        assert body(answer) == action.response, "the answer is what the tool recorded"

    async def test_the_fencing_token_ids_and_arguments_reach_the_tool(
        self, harness: GatewayHarness
    ) -> None:
        key, run_id = new_key(), f"run-{uuid.uuid4().hex[:8]}"
        args = {"subject": "Ünïcode ✓", "customer_id": "c-9", "priority": "high"}
        answer = await call(
            harness,
            "create_ticket",
            key,
            args=args,
            token=7,
            tenant="t2",
            run_id=run_id,
            tool_call_id="call-xyz",
        )
        assert answer.ok
        (action,) = harness.actions(key)
        assert (
            action.tool,
            action.tenant,
            action.run_id,
            action.tool_call_id,
            action.idempotency_key,
            action.fencing_token,
        ) == ("create_ticket", "t2", run_id, "call-xyz", key, 7)
        assert action.payload_hash == canonical_hash(args), "the arguments arrived intact"

    @pytest.mark.parametrize("tool", KEY_TOOLS)
    async def test_a_key_honouring_tool_acts_once_per_key(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        key = new_key()
        first = await call(harness, tool, key)
        again = await call(harness, tool, key, token=2, tool_call_id="call-2")
        assert first.ok and again.ok
        assert body(again) == body(first) and again.replayed and not first.replayed
        (action,) = harness.actions(key)
        assert action.fencing_token == 1, "the repeat did not act"
        other_key = new_key()
        other = await call(harness, tool, other_key)
        assert body(other) != body(first)
        assert len(harness.actions(other_key)) == 1

    async def test_a_key_reused_with_another_body_is_refused_without_acting(
        self, harness: GatewayHarness
    ) -> None:
        key = new_key()
        assert (await call(harness, "send_email", key)).ok
        changed = {**ARGS["send_email"], "subject": "Something else"}
        refused = await call(harness, "send_email", key, args=changed)
        assert refused.status == 422 and not refused.ok
        assert len(harness.actions(key)) == 1

    @pytest.mark.parametrize("tool", NO_KEY_TOOLS)
    async def test_a_tool_without_key_acts_on_every_call(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        key = new_key()
        first = await call(harness, tool, key)
        second = await call(harness, tool, key)
        assert first.ok and second.ok and not second.replayed
        assert body(first) != body(second)
        actions = harness.actions(key)
        assert [a.response for a in actions] == [body(first), body(second)]

    # ---- lookups -----------------------------------------------------------------------

    async def test_the_lookup_finds_the_action_a_call_took(self, harness: GatewayHarness) -> None:
        key = new_key()
        answer = await call(harness, "update_crm", key, tenant="t3", run_id="run-l")
        found = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t3")
        (action,) = found.actions
        (audited,) = harness.actions(key)
        assert action["response"] == body(answer) == audited.response
        assert (action["tenant"], action["run_id"], action["tool_call_id"]) == (
            "t3",
            "run-l",
            "call-1",
        )
        elsewhere = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t4")
        assert elsewhere.actions == (), "a lookup sees its own tenant's actions only"

    async def test_the_lookup_finds_nothing_for_a_call_that_did_not_act(
        self, harness: GatewayHarness
    ) -> None:
        never = await harness.gateway.lookup(SPECS["update_crm"], effect_key=new_key(), tenant="t1")
        assert never.actions == ()
        key = new_key()
        refused = await call(harness, "update_crm", key, args={"customer_id": "c-1"})
        assert refused.status == 422
        found = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t1")
        assert found.actions == () and harness.actions(key) == []

    async def test_a_lookup_of_a_tool_without_one_is_an_error(
        self, harness: GatewayHarness
    ) -> None:
        with pytest.raises(ValueError):
            await harness.gateway.lookup(SPECS["post_note"], effect_key=new_key(), tenant="t1")

    # ---- lost answers: the tool acted ------------------------------------------------------

    @pytest.mark.parametrize("tool", ["create_ticket", "update_crm", "post_note"])
    async def test_an_answer_lost_after_acting_is_outcome_unknown(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        harness.lose_answers(tool)
        key = new_key()
        with pytest.raises(OutcomeUnknown):
            await call(harness, tool, key)
        assert len(harness.actions(key)) == 1, "it acted although nobody heard the answer"

    async def test_after_a_lost_answer_the_same_key_answers_the_first_result(
        self, harness: GatewayHarness
    ) -> None:
        harness.lose_answers("create_ticket")
        key = new_key()
        with pytest.raises(OutcomeUnknown):
            await call(harness, "create_ticket", key)
        again = await call(harness, "create_ticket", key, token=2)  # the fault still armed
        (action,) = harness.actions(key)
        assert again.ok and again.replayed
        assert body(again) == action.response

    async def test_after_a_lost_answer_the_lookup_finds_the_action(
        self, harness: GatewayHarness
    ) -> None:
        harness.lose_answers("update_crm")
        key = new_key()
        with pytest.raises(OutcomeUnknown):
            await call(harness, "update_crm", key)
        found = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t1")
        (action,) = found.actions
        (audited,) = harness.actions(key)
        assert action["response"] == audited.response

    # ---- refused before acting -------------------------------------------------------------

    @pytest.mark.parametrize("tool", ["create_ticket", "post_note", "lookup_customer"])
    async def test_a_call_that_cannot_reach_the_gateway_is_not_sent(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        harness.cut()
        key = new_key()
        with pytest.raises(NotSent):
            await call(harness, tool, key)
        assert harness.actions(key) == []
        harness.heal()
        assert (await call(harness, tool, key)).ok, "sending again is safe"
        assert len(harness.actions(key)) == (0 if tool in READS else 1)

    async def test_a_lookup_that_cannot_be_asked_is_lookup_unavailable(
        self, harness: GatewayHarness
    ) -> None:
        key = new_key()
        assert (await call(harness, "update_crm", key)).ok
        harness.cut()
        with pytest.raises(LookupUnavailable):
            await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t1")
        harness.heal()
        found = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t1")
        assert len(found.actions) == 1

    @pytest.mark.parametrize("tool", ["create_ticket", "update_crm", "post_note"])
    async def test_a_server_error_on_a_write_is_outcome_unknown_even_if_it_did_not_act(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        """A 5xx does not say whether the tool acted: the caller must treat it as unknown."""
        harness.fail_before_acting(tool)
        key = new_key()
        with pytest.raises(OutcomeUnknown):
            await call(harness, tool, key)
        assert harness.actions(key) == []
        harness.heal()
        assert (await call(harness, tool, key)).ok
        assert len(harness.actions(key)) == 1

    async def test_a_server_error_on_a_read_is_not_sent(self, harness: GatewayHarness) -> None:
        harness.fail_before_acting("lookup_customer")
        with pytest.raises(NotSent):
            await call(harness, "lookup_customer", new_key())

    async def test_arguments_the_tool_refuses_are_an_error_answer_without_acting(
        self, harness: GatewayHarness
    ) -> None:
        key = new_key()
        refused = await call(harness, "charge_card", key, args={"customer_id": "c-1"})
        assert refused.status == 422 and not refused.ok
        assert harness.actions(key) == []

    async def test_an_unknown_endpoint_is_an_error_answer_not_an_action(
        self, harness: GatewayHarness
    ) -> None:
        spec = SPECS["post_note"].model_copy(
            update={"name": "no_such_tool", "endpoint": "/tools/no_such_tool"}
        )
        key = new_key()
        answer = await call(harness, "post_note", key, spec=spec)
        assert answer.status == 404 and not answer.ok
        assert "no_such_tool" in answer.message()
        assert harness.actions(key) == []

    # ---- reads ---------------------------------------------------------------------------

    @pytest.mark.parametrize("tool", READS)
    async def test_a_read_may_be_repeated_and_never_acts(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        key = new_key()
        answers = [await call(harness, tool, key, token=n) for n in (1, 2, 3)]
        assert all(a.ok and not a.replayed for a in answers)
        assert body(answers[0]) == body(answers[1]) == body(answers[2])
        assert harness.actions(key) == []

    # ---- request deadlines (tools.yaml, "Request deadlines and fencing") -------------------

    @pytest.mark.parametrize("tool", WRITES)
    async def test_a_write_that_arrives_past_its_deadline_does_not_act(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        key = new_key()
        with pytest.raises(NotSent):
            await call(harness, tool, key, deadline_ms=ms(harness.now()) - 1)
        assert harness.actions(key) == [], "refused before acting: sending again is safe"
        assert (await call(harness, tool, key)).ok
        assert len(harness.actions(key)) == 1

    @pytest.mark.parametrize("tool", NO_KEY_TOOLS)
    async def test_a_request_held_past_its_deadline_never_acts(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        """The gateway is slow: the request reaches the tool after its deadline, and the tool
        must not act on it then (the caller may already have trusted an empty lookup)."""
        harness.hold(tool, 1.0)
        key = new_key()
        with pytest.raises(OutcomeUnknown):
            await call(harness, tool, key, timeout_s=0.3, deadline_ms=ms(harness.now() + 0.3))
        await harness.pass_time(1.5)
        assert harness.actions(key) == [], "it reached the tool after its deadline"
        if tool == "update_crm":
            found = await harness.gateway.lookup(SPECS[tool], effect_key=key, tenant="t1")
            assert found.actions == ()

    async def test_a_held_request_acts_before_its_deadline_after_an_empty_lookup(
        self, harness: GatewayHarness
    ) -> None:
        """Why an empty lookup proves nothing before the deadline: the request is still on
        its way, and acts after the caller gave up and looked."""
        harness.hold("update_crm", 0.5)
        key = new_key()
        with pytest.raises(OutcomeUnknown):
            await call(harness, "update_crm", key, timeout_s=0.2, deadline_ms=ms(harness.now() + 5))
        spec = SPECS["update_crm"]
        early = await harness.gateway.lookup(spec, effect_key=key, tenant="t1")
        assert early.actions == (), "not acted yet"
        await harness.pass_time(1.0)
        late = await harness.gateway.lookup(spec, effect_key=key, tenant="t1")
        (action,) = late.actions
        (audited,) = harness.actions(key)
        assert action["response"] == audited.response

    # ---- fencing tokens ------------------------------------------------------------------

    @pytest.mark.parametrize("tool", WRITES)
    async def test_a_request_with_a_stale_fencing_token_is_refused_without_acting(
        self, harness: GatewayHarness, tool: str
    ) -> None:
        key = new_key()
        newer = await call(harness, tool, key, token=2, tool_call_id="call-newer")
        assert newer.ok
        with pytest.raises(ToolFenced):
            await call(harness, tool, key, token=1, tool_call_id="call-older")
        assert [a.fencing_token for a in harness.actions(key)] == [2], "the stale one did not act"
        again = await call(harness, tool, key, token=2)
        assert again.ok, "the holder of the newest token is not fenced"
        expected = [2] if tool in KEY_TOOLS else [2, 2]
        assert [a.fencing_token for a in harness.actions(key)] == expected

    async def test_the_newer_token_acts_after_an_older_one(self, harness: GatewayHarness) -> None:
        key = new_key()
        assert (await call(harness, "update_crm", key, token=1)).ok
        assert (await call(harness, "update_crm", key, token=3)).ok
        with pytest.raises(ToolFenced):
            await call(harness, "update_crm", key, token=2)
        found = await harness.gateway.lookup(SPECS["update_crm"], effect_key=key, tenant="t1")
        assert len(found.actions) == 2
        assert [a.fencing_token for a in harness.actions(key)] == [1, 3]

    async def test_fences_are_per_effect_key_and_tenant(self, harness: GatewayHarness) -> None:
        key, other = new_key(), new_key()
        assert (await call(harness, "post_note", key, token=9)).ok
        assert (await call(harness, "post_note", other, token=1)).ok, "another key"
        assert (await call(harness, "post_note", key, token=1, tenant="t2")).ok, "another tenant"
        with pytest.raises(ToolFenced):
            await call(harness, "post_note", key, token=8)
        assert len(harness.actions(key)) == 2

    async def test_reads_are_not_fenced(self, harness: GatewayHarness) -> None:
        key = new_key()
        for token in (3, 1, 2):
            assert (await call(harness, "lookup_customer", key, token=token)).ok

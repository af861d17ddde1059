"""Approvals in the run domain: a call that needs a person's decision is held, decided exactly
once, and never stalls its step.

Scenarios first (one behaviour each), then a property: every order and timing of request,
decisions (repeated, conflicting, early), ticks and tool results gives one outcome per call,
the held call is dispatched at most once and only after an approve, and the step is always
answered.
"""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from runcoord.domain import Policy, ToolRule, fold
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.ids import approval_id, payload_hash
from runcoord.domain.model import ToolCall
from runcoord.domain.policy import ApprovalRule, ArgumentCondition
from tests.unit.domain.helpers import Driver, start

CHARGE = '{"amount_cents": 50000}'
SMALL = '{"amount_cents": 500}'
APPROVAL = ApprovalRule(when=(ArgumentCondition("amount_cents", above=10_000),))
POLICY = Policy(
    tools={
        "lookup": ToolRule("lookup", write=False, tenants=frozenset({"*"})),
        "charge_card": ToolRule("charge_card", True, frozenset({"t1", "t2"}), APPROVAL),
    },
    safety_margin_ms=1_000,
    step_budget_ms=10_000,
    run_budget_ms=120_000,
    cancel_grace_ms=5_000,
    watch_timeout_ms=5_000,
    watch_grace_ms=2_000,
    approval_budget_ms=60_000,
    approval_version="ap1_v1",
)
HELD = ToolCall("call_h", "charge_card", CHARGE)
PLAIN = ToolCall("call_p", "lookup", "{}")
STEP = "step_1"
ID = approval_id(run_id="r1", step_id=STEP, tool_call_id=HELD.id)


def opened(*, expires: int | None = None, policy: Policy = POLICY) -> Driver:
    d = Driver(policy)
    d.feed(start())
    d.created(expires=expires)
    d.observe("requires_action", STEP, (HELD, PLAIN), expires=expires)
    return d


def decision(
    kind: str = "approve",
    approver: str = "alice",
    reason: str = "ok",
    *,
    arguments: str = CHARGE,
    version: str = "ap1_v1",
    tenant: str = "t1",
) -> inp.ApprovalDecision:
    return inp.ApprovalDecision(
        "r1", tenant, ID, kind, reason, approver, payload_hash(arguments), version, 1
    )


def tool_intents(d: Driver, call_id: str) -> list[it.ToolCallIntent]:
    return [
        i
        for x in d.decisions
        for i in x.intents
        if isinstance(i, it.ToolCallIntent) and i.tool_call_id == call_id
    ]


def submitted(d: Driver) -> dict[str, dict[str, object]]:
    subs = [i for x in d.decisions for i in x.intents if isinstance(i, it.SubmitOutputsIntent)]
    assert len(subs) == 1, subs
    return {o.tool_call_id: {"source": o.source, **json.loads(o.output)} for o in subs[0].outputs}


def decided(d: Driver) -> list[ev.ApprovalDecided]:
    return [e for e in d.journal if isinstance(e, ev.ApprovalDecided)]


# -- scenarios -------------------------------------------------------------------------------


def test_a_call_that_needs_approval_is_held_and_the_others_proceed() -> None:
    d = opened(expires=600_000)
    assert tool_intents(d, PLAIN.id) and not tool_intents(d, HELD.id)
    (request,) = [e for e in d.journal if isinstance(e, ev.ApprovalRequested)]
    a = request.approval
    assert (a.approval_id, a.tool, a.policy_version) == (ID, "charge_card", "ap1_v1")
    assert a.arguments_hash == payload_hash(CHARGE)


def test_approve_dispatches_the_call_once() -> None:
    d = opened(expires=600_000)
    d.feed(decision("approve"))
    assert len(tool_intents(d, HELD.id)) == 1
    d.feed(decision("approve"))  # the same decision again: a no-op
    assert len(tool_intents(d, HELD.id)) == 1
    assert "duplicate" in d.journal[-1].reason  # type: ignore[attr-defined]
    d.result(HELD.id)
    d.result(PLAIN.id)
    assert submitted(d)[HELD.id]["source"] == "tool"


def test_reject_answers_the_model_with_who_and_why_and_never_dispatches() -> None:
    d = opened(expires=600_000)
    d.feed(decision("reject", "bob", "amount too high"))
    d.result(PLAIN.id)
    out = submitted(d)[HELD.id]
    assert out["error"] == {
        "type": "approval_rejected",
        "message": "rejected by bob: amount too high",
    }  # type: ignore[comparison-overlap]
    assert not tool_intents(d, HELD.id)


def test_a_conflicting_later_decision_is_refused_with_the_recorded_one() -> None:
    d = opened(expires=600_000)
    d.feed(decision("approve", "alice"))
    d.feed(decision("reject", "bob", "no"))
    assert d.journal[-1].reason == "conflicting: already approve by alice"  # type: ignore[attr-defined]
    assert [x.decision for x in decided(d)] == ["approve"]


def test_no_decision_is_an_explicit_error_at_the_approval_deadline() -> None:
    d = opened()  # Responses: no expires_at, the approval budget alone
    deadline = d.run.step.approvals[0].deadline_ms  # type: ignore[union-attr]
    assert deadline == d.now + POLICY.approval_budget_ms
    d.result(PLAIN.id)
    early = d.feed(inp.Tick("r1"), at=deadline - 1).events
    assert not [e for e in early if isinstance(e, ev.ApprovalDecided | ev.ToolOutputRecorded)]
    d.feed(inp.Tick("r1"), at=deadline)
    assert submitted(d)[HELD.id]["error"] == {  # type: ignore[comparison-overlap]
        "type": "approval_expired",
        "message": "not approved in time",
    }
    # Waiting for the approval did not cost the run its budget.
    assert d.run.cancel_reason is None


def test_with_assistants_the_deadline_leaves_room_before_the_run_expires() -> None:
    d = opened(expires=40_000)
    step = d.run.step
    assert step is not None
    a = step.approvals[0]
    assert step.deadline_ms <= 40_000 - POLICY.safety_margin_ms
    assert a.deadline_ms <= step.deadline_ms - POLICY.step_budget_ms


def test_a_decision_before_its_request_is_kept_and_applied_once_the_request_is_journaled() -> None:
    d = Driver(POLICY)
    d.feed(start())
    d.created(expires=600_000)
    early = d.feed(decision("approve"))
    assert [type(e) for e in early.events] == [ev.ApprovalDecisionParked]
    assert early.dead_letter is None
    d.observe("requires_action", STEP, (HELD, PLAIN), expires=600_000)
    assert len(tool_intents(d, HELD.id)) == 1
    assert d.run.parked == ()


def test_a_decision_on_other_arguments_or_rules_is_refused_fail_closed() -> None:
    d = opened(expires=600_000)
    other_args = d.feed(decision("approve", arguments=SMALL))
    old_rules = d.feed(decision("approve", version="ap1_v0"))
    assert "other arguments" in (other_args.dead_letter or "")
    assert "other approval rules" in (old_rules.dead_letter or "")
    assert not tool_intents(d, HELD.id) and not decided(d)


def test_rules_changed_since_the_request_expire_the_approval_at_once() -> None:
    d = opened(expires=600_000)
    d.policy = replace(POLICY, approval_version="ap1_v2")  # the coordinator restarted
    d.feed(decision("approve"))
    d.result(PLAIN.id)
    assert not tool_intents(d, HELD.id)
    assert "rules changed" in submitted(d)[HELD.id]["error"]["message"]  # type: ignore[index]


def test_a_tool_result_for_a_call_never_approved_is_refused() -> None:
    d = opened(expires=600_000)
    out = d.result(HELD.id)
    assert "never approved" in (out.dead_letter or "")
    assert d.run.step.output_for(HELD.id) is None  # type: ignore[union-attr]


def test_policy_by_tenant_and_by_argument() -> None:
    rule = ApprovalRule(tenants={"t2": False}, when=(ArgumentCondition("amount_cents", above=100),))
    assert rule.needed("t1", '{"amount_cents": 101}')
    assert not rule.needed("t1", '{"amount_cents": 100}')
    assert not rule.needed("t2", '{"amount_cents": 10000}')
    assert rule.needed("t1", "not json")  # unreadable arguments: fail closed
    assert not rule.needed("t1", '{"amount_cents": true}')
    assert ApprovalRule(required=False, tenants={"t3": True}).needed("t3", "{}")


def test_a_small_amount_needs_no_approval() -> None:
    d = Driver(POLICY)
    d.feed(start())
    d.created(expires=600_000)
    d.observe("requires_action", STEP, (ToolCall("c", "charge_card", SMALL),), expires=600_000)
    assert tool_intents(d, "c") and not d.run.step.approvals  # type: ignore[union-attr]


def test_a_decision_from_another_tenant_is_dead_lettered() -> None:
    d = opened(expires=600_000)
    assert "another tenant" in (d.feed(decision(tenant="t2")).dead_letter or "")


# -- every order ---------------------------------------------------------------------------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("decide"),
            st.sampled_from(["approve", "reject"]),
            st.sampled_from(["alice", "bob"]),
        ),
        st.tuples(st.just("tick"), st.integers(0, 90_000), st.just("")),
        st.tuples(st.just("result"), st.sampled_from([HELD.id, PLAIN.id]), st.just("")),
        st.tuples(st.just("stale"), st.just(""), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(
    early=st.sampled_from([None, "approve", "reject"]),
    expires=st.sampled_from([None, 40_000, 600_000]),
    actions=ACTIONS,
)
def test_every_order_gives_one_outcome_and_never_stalls(
    early: str | None, expires: int | None, actions: list[tuple[str, object, str]]
) -> None:
    d = Driver(POLICY)
    d.feed(start())
    d.created(expires=expires)
    if early:
        d.feed(decision(early, "carol"))
    d.observe("requires_action", STEP, (HELD, PLAIN), expires=expires)
    for kind, a, b in actions:
        step = d.run.step
        if kind == "decide":
            d.feed(decision(str(a), b))
        elif kind == "tick":
            d.feed(inp.Tick("r1"), at=max(d.now, int(a)))  # type: ignore[call-overload]
        elif (
            kind == "result" and step and step.output_for(str(a)) is None and dispatched(d, str(a))
        ):
            d.result(str(a))
        elif kind == "stale":
            d.feed(decision("approve", arguments=SMALL))
        check(d)
    # Then the world goes on: results for what was dispatched, time passes; the step must be
    # answered without anybody deciding anything.
    for call_id in (HELD.id, PLAIN.id):
        step = d.run.step
        if step and step.output_for(call_id) is None and dispatched(d, call_id):
            d.result(call_id)
    for _ in range(4):
        d.feed(inp.Tick("r1"), at=d.now + 70_000)
        check(d)
    r = d.run
    answered = r.step is not None and r.step.submission_key is not None
    assert answered or r.cancel_reason is not None, "stalled"


def dispatched(d: Driver, call_id: str) -> bool:
    return bool(tool_intents(d, call_id))


def check(d: Driver) -> None:
    outcomes = decided(d)
    assert len(outcomes) <= 1, outcomes  # one decision per approval, ever
    held = tool_intents(d, HELD.id)
    assert len(held) <= 1
    if held:  # dispatched only after the first recorded decision was an approve
        assert outcomes and outcomes[0].decision == "approve"
    first = next(
        (
            i
            for i, x in enumerate(d.decisions)
            if any(isinstance(e, ev.ApprovalDecided) for e in x.events)
        ),
        None,
    )
    dispatch_at = next(
        (
            i
            for i, x in enumerate(d.decisions)
            if any(
                isinstance(t, it.ToolCallIntent) and t.tool_call_id == HELD.id for t in x.intents
            )
        ),
        None,
    )
    if dispatch_at is not None:
        assert first is not None and first <= dispatch_at
    step = d.run.step
    if step is not None and outcomes and outcomes[0].decision != "approve":
        out = step.output_for(HELD.id)
        assert out is not None and out.source == "approval"
    assert fold(d.journal) == d.state  # type: ignore[arg-type]

"""The harness's approvals: traces that mark calls for approval, the simulated approver, and
the report's figures (writes without approval and after reject must be 0 for a system that
holds calls; a system that does not, the baseline, shows them)."""

from __future__ import annotations

import threading
import time

from runcoord.config import REPO_ROOT
from runcoord.domain import events as ev
from runcoord.domain.ids import approval_id, payload_hash
from runcoord.domain.inputs import ApprovalDecision
from runcoord.domain.model import Approval, ToolCall
from runcoord.harness.report.approvals import approval_figures
from runcoord.harness.report.data import AuditRow, RunRecord, SystemData
from runcoord.harness.report.writes import expected_calls
from runcoord.harness.report.writes import payload_hash as gateway_hash
from runcoord.harness.systems.approver import SECOND_APPROVER, SimApprover
from runcoord.harness.workload.generate import GeneratorConfig, generate, with_approvals
from runcoord.harness.workload.trace import (
    APPROVAL_ARGUMENT,
    TraceApproval,
    TraceCall,
    TraceFinal,
    TraceScript,
    TraceStep,
    TraceTurn,
)
from runcoord.registry import load_registry
from runcoord.sim.provider.scripts import parse_script

REGISTRY = load_registry(REPO_ROOT / "tools.yaml")
WRITES = {n for n, t in REGISTRY.tools.items() if t.write}


def test_a_share_of_write_calls_is_marked_and_the_rest_of_the_trace_is_untouched() -> None:
    trace = generate(GeneratorConfig(turns=300, seed=3), REGISTRY)
    marked = with_approvals(trace, 0.5, 3, WRITES)
    assert with_approvals(trace, 0.5, 3, WRITES) == marked  # one seed, one trace
    calls = [
        (a, b)
        for t, u in zip(trace, marked, strict=True)
        for a, b in zip(t.script.calls(), u.script.calls(), strict=True)
    ]
    held = [b for _, b in calls if b.approval is not None]
    assert held and all(c.name in WRITES and c.arguments[APPROVAL_ARGUMENT] is True for c in held)
    assert {c.approval.decision for c in held if c.approval} == {"approve", "reject", "none"}
    assert all(a == b for a, b in calls if b.approval is None)
    assert [t.offset_ms for t in trace] == [t.offset_ms for t in marked]


def test_the_simulated_provider_never_sees_the_approvers_script() -> None:
    call = TraceCall(
        name="charge_card",
        arguments={"amount_cents": 5},
        approval=TraceApproval(decision="approve"),
    )
    script = TraceScript(
        steps=[TraceStep(tool_calls=[call], latency_ms=10)], final=TraceFinal(latency_ms=5)
    )
    parsed = parse_script(script.to_sim())  # the simulator's own validation
    assert parsed.steps[0].tool_calls[0].name == "charge_card"
    assert script.approvals() == {(0, 0): call.approval}


def test_only_approved_calls_are_expected_to_act() -> None:
    def call(decision: str) -> TraceCall:
        return TraceCall(
            name="post_note",
            arguments={"text": decision},
            approval=TraceApproval(decision=decision),
        )  # type: ignore[arg-type]

    turn = _turn(call("approve"), call("reject"), call("none"))
    expected = expected_calls(turn, {"post_note": frozenset({"t1"})})
    assert list(expected) == [("post_note", gateway_hash({"text": "approve"}))]


# -- the report ------------------------------------------------------------------------------


def _turn(*calls: TraceCall) -> TraceTurn:
    steps = [TraceStep(tool_calls=list(calls), latency_ms=1)]
    script = TraceScript(steps=steps, final=TraceFinal(latency_ms=1))
    return TraceTurn(
        turn_id="u1", tenant="t1", conversation="c1", offset_ms=0, input="hi", script=script
    )


def _request(run: str, call: str, at: int, seq: int) -> ev.ApprovalRequested:
    a = Approval(
        approval_id(run_id=run, step_id="s1", tool_call_id=call),
        call,
        "post_note",
        "h",
        "v",
        at + 5_000,
        at,
    )
    return ev.ApprovalRequested(
        run_id=run,
        seq=seq,
        at_ms=at,
        step_id="s1",
        approval=a,
        step_deadline_ms=0,
        run_deadline_ms=0,
    )


def _decided(run: str, call: str, decision: str, at: int, seq: int) -> ev.ApprovalDecided:
    aid = approval_id(run_id=run, step_id="s1", tool_call_id=call)
    return ev.ApprovalDecided(
        run_id=run,
        seq=seq,
        at_ms=at,
        step_id="s1",
        approval_id=aid,
        decision=decision,
        reason="",
        approver="x",
        decided_at_ms=at,
    )


def _row(run: str, call: str, body: dict[str, object], at_s: float) -> AuditRow:
    return AuditRow("post_note", "t1", run, call, gateway_hash(body), None, at_s)


def test_writes_without_approval_and_after_reject_are_counted_from_the_audit() -> None:
    approve = TraceCall(
        name="post_note",
        arguments={"text": "a", APPROVAL_ARGUMENT: True},
        approval=TraceApproval(decision="approve"),
    )
    reject = TraceCall(
        name="post_note",
        arguments={"text": "b", APPROVAL_ARGUMENT: True},
        approval=TraceApproval(decision="reject"),
    )
    early = TraceCall(
        name="post_note",
        arguments={"text": "c", APPROVAL_ARGUMENT: True},
        approval=TraceApproval(decision="approve"),
    )
    trace = {"u1": _turn(approve, reject, early)}
    runs = [RunRecord("r1", "u1", "t1", "c1", False, 0.0)]
    requests = [_request("r1", c, 1_000, i + 1) for i, c in enumerate(("ca", "cb", "cc"))]
    decisions = [
        _decided("r1", "ca", "approve", 2_000, 4),
        _decided("r1", "cb", "reject", 2_000, 5),
        _decided("r1", "cc", "approve", 9_000, 6),
    ]
    journal = {"r1": requests + decisions}
    audit = [
        _row("r1", "ca", approve.arguments, 2.5),  # after its approve: fine
        _row("r1", "cb", reject.arguments, 2.5),  # after a reject
        _row("r1", "cc", early.arguments, 3.0),  # before its approve
    ]
    held = SystemData("runcoord", runs, audit, {}, journal=journal)  # type: ignore[arg-type]
    figures = approval_figures(held, trace)
    assert figures is not None
    assert (figures["writes_without_approval"], figures["writes_after_reject"]) == (1, 1)
    assert figures["approvals"] | {} == {
        "marked_calls": 3, "requested": 3, "approved": 2, "rejected": 1, "expired": 0,
        "pending": 0, "decision_p50_ms": 1000,
    }  # fmt: skip
    # Without a journal (the baseline): every marked write acted without approval.
    baseline = approval_figures(SystemData("baseline", runs, audit, {}), trace)
    assert baseline is not None and baseline["writes_without_approval"] == 3


def test_no_approvals_no_figures() -> None:
    plain = TraceCall(name="post_note", arguments={"text": "a"})
    data = SystemData(
        "runcoord", [RunRecord("r1", "u1", "t1", "c1", False, 0.0)], [], {}, journal={}
    )
    assert approval_figures(data, {"u1": _turn(plain)}) is None


# -- the simulated approver ------------------------------------------------------------------


def test_the_approver_decides_as_scripted_after_its_delay() -> None:
    sent: list[ApprovalDecision] = []
    got = threading.Event()

    def send(d: ApprovalDecision) -> None:
        sent.append(d)
        if len(sent) >= 3:
            got.set()

    approver = SimApprover(send)
    try:
        scripts = {
            (0, 1): TraceApproval(decision="approve", after_ms=50, duplicates=1, conflicting=True),
            (0, 0): TraceApproval(decision="none"),
        }
        approver.expect("r1", "t1", scripts)
        calls = (ToolCall("c0", "post_note", "{}"), ToolCall("c1", "post_note", "{}"))
        approver.on_event(
            ev.StepOpened(
                run_id="r1",
                seq=3,
                at_ms=0,
                step_id="s1",
                calls=calls,
                deadline_ms=0,
                expires_at_ms=None,
            )
        )
        for call in calls:
            a = Approval(
                approval_id(run_id="r1", step_id="s1", tool_call_id=call.id),
                call.id,
                "post_note",
                payload_hash("{}"),
                "v1",
                0,
                0,
            )
            approver.on_event(
                ev.ApprovalRequested(
                    run_id="r1",
                    seq=4,
                    at_ms=0,
                    step_id="s1",
                    approval=a,
                    step_deadline_ms=0,
                    run_deadline_ms=0,
                )
            )
        started = time.monotonic()
        assert got.wait(5), sent
        assert time.monotonic() - started >= 0.04
    finally:
        approver.close()
    assert [(d.decision, d.approver == SECOND_APPROVER) for d in sent] == [
        ("approve", False),
        ("approve", False),
        ("reject", True),
    ]
    only = approval_id(run_id="r1", step_id="s1", tool_call_id="c1")
    assert {d.approval_id for d in sent} == {only}  # "none": nobody decides for c0
    assert all(
        (d.arguments_hash, d.policy_version, d.tenant) == (payload_hash("{}"), "v1", "t1")
        for d in sent
    )

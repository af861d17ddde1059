"""A run's story tells an approval's request, who decided what, and what followed."""

from __future__ import annotations

from runcoord.domain import events as ev
from runcoord.domain.model import Approval, ParkedDecision
from runcoord.forensics.timeline import _describe

APPROVAL = Approval("apr_1", "call_1", "charge_card", "h", "ap1_v1", 61_000, 1_000)


def test_the_request_says_the_call_waits_and_until_when() -> None:
    line = _describe(
        ev.ApprovalRequested(
            run_id="r",
            seq=5,
            at_ms=1_000,
            step_id="s1",
            approval=APPROVAL,
            step_deadline_ms=0,
            run_deadline_ms=0,
        ),
        {},
    )
    assert "apr_1 requested for charge_card (call_1)" in line
    assert "not dispatched until decided" in line and "ap1_v1" in line


def test_each_decision_says_who_why_and_what_followed() -> None:
    def decided(decision: str, approver: str) -> str:
        return _describe(
            ev.ApprovalDecided(
                run_id="r",
                seq=6,
                at_ms=2_000,
                step_id="s1",
                approval_id="apr_1",
                decision=decision,
                reason="because",
                approver=approver,
                decided_at_ms=2_000,
            ),
            {},
        )

    assert decided("approve", "alice").endswith(
        "approve by alice (because); the call is dispatched"
    )
    assert "the model is told it was rejected" in decided("reject", "bob")
    assert "not approved" in decided("expired", "runcoord")
    parked = ParkedDecision("apr_1", "approve", "ok", "alice", "h", "ap1_v1", 500)
    line = _describe(ev.ApprovalDecisionParked(run_id="r", seq=3, at_ms=500, decision=parked), {})
    assert "kept: its request is not journaled yet" in line

"""What an event says about an approval, for the projection."""

from __future__ import annotations

from runcoord.domain import events as ev
from runcoord.domain.model import Approval
from runcoord.forensics.projection import ApprovalRow, DecisionRow, approval_row


def test_a_request_is_a_pending_row_of_the_runs_tenant_and_a_decision_its_verdict() -> None:
    approval = Approval("apr_1", "c1", "charge_card", "h", "v", 9_000, 1_000)
    asked = ev.ApprovalRequested(
        run_id="r", seq=4, at_ms=1_000, step_id="s1", approval=approval,
        step_deadline_ms=20_000, run_deadline_ms=60_000,
    )  # fmt: skip
    decided = ev.ApprovalDecided(
        run_id="r", seq=5, at_ms=2_000, step_id="s1", approval_id="apr_1", decision="expired",
        reason="not approved in time", approver="runcoord", decided_at_ms=2_000,
    )  # fmt: skip
    assert approval_row(asked, "t1") == ApprovalRow(
        "r", "t1", "apr_1", "s1", "c1", "charge_card", "h", "v", 4, 9_000, 1_000
    )
    assert approval_row(decided, "t1") == DecisionRow(
        "r", "apr_1", "expired", "not approved in time", "runcoord", 2_000
    )
    assert approval_row(ev.WatchRenewed(run_id="r", seq=6, at_ms=0, reason="x"), "t1") is None

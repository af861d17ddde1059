"""Approvals: what was asked, what was decided and how fast, and the two figures that must be
0: **writes without approval** (an audit row of a call that needed approval with no approve
recorded before the action) and **writes after reject** (an audit row of a call whose approval
was rejected or expired).

Which calls needed approval: those the trace marks (``approval_required`` in their arguments,
matched to audit rows by tool and payload hash, so a system that keeps no journal, the
baseline, is judged too), and those the journal shows held (``ApprovalRequested``). Decisions
come from the journal alone: a system without one recorded none.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from runcoord.domain import events as ev
from runcoord.harness.report.data import SystemData
from runcoord.harness.report.writes import payload_hash
from runcoord.harness.workload.trace import TraceTurn


def approval_figures(data: SystemData, trace: Mapping[str, TraceTurn]) -> dict[str, Any] | None:
    """None when nothing in the trace or the journal needed approval."""
    turn_of = {r.run_id: trace[r.turn_id] for r in data.runs}
    marked = {
        (call.name, payload_hash(call.arguments))
        for turn in turn_of.values()
        for call in turn.script.calls()
        if call.approval is not None
    }
    requested: dict[tuple[str, str], ev.ApprovalRequested] = {}  # (run, call) -> request
    decided: dict[tuple[str, str], ev.ApprovalDecided] = {}
    for run_id, events in (data.journal or {}).items():
        by_id: dict[str, tuple[str, str]] = {}
        for e in events:
            if isinstance(e, ev.ApprovalRequested):
                key = (run_id, e.approval.tool_call_id)
                requested[key] = e
                by_id[e.approval.approval_id] = key
            elif isinstance(e, ev.ApprovalDecided) and e.approval_id in by_id:
                decided.setdefault(by_id[e.approval_id], e)  # the first decision is final
    if not marked and not requested:
        return None
    without = after_reject = 0
    for row in data.audit:
        call = (row.run_id or "", row.tool_call_id or "")
        needed = call in requested or (row.tool, row.payload_hash) in marked
        if not needed:
            continue
        decision = decided.get(call)
        approved_before = (
            decision is not None
            and decision.decision == "approve"
            and decision.at_ms <= row.acted_at * 1000
        )
        if decision is not None and decision.decision != "approve":
            after_reject += 1
        elif not approved_before:
            without += 1
    waits = [
        decided[k].at_ms - requested[k].at_ms
        for k in decided
        if k in requested and decided[k].decision in ("approve", "reject")
    ]
    counts = {
        d: sum(1 for x in decided.values() if x.decision == d)
        for d in ("approve", "reject", "expired")
    }
    return {
        "approvals": {
            "marked_calls": len(marked),
            "requested": len(requested),
            "approved": counts["approve"],
            "rejected": counts["reject"],
            "expired": counts["expired"],
            "pending": len(requested) - len(decided),
            "decision_p50_ms": round(statistics.median(waits)) if waits else None,
        },
        "writes_without_approval": without,
        "writes_after_reject": after_reject,
    }

"""The report's figures for one system, computed from what the replay saved (``data``).

Keys are documented in runcoord/harness/README.md ("Report keys"); the required ones are
named as the seeds name them. Thresholds come from the
protocol so a report is read the way it was made.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from runcoord.harness.report.approvals import approval_figures
from runcoord.harness.report.data import SystemData
from runcoord.harness.report.hops import HOPS, step_hops
from runcoord.harness.report.missing import attribute_missing
from runcoord.harness.report.steps import TERMINAL, StepWait, analyse
from runcoord.harness.report.writes import write_figures
from runcoord.harness.workload.trace import TraceTurn

TERMINAL_BUDGET_S = 120.0
STALL_THRESHOLD_S = 5.0
CLUSTER_WINDOW_S = 90.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def added_by_turn(
    data: SystemData, trace: Mapping[str, TraceTurn], queue_ms: float
) -> list[tuple[float, float]]:
    """(sent at, ms the turn took beyond its model and queue time) per completed turn, in
    the order the turns were sent."""
    out = []
    for r in sorted(data.runs, key=lambda r: r.sent_at):
        if r.finished_at is None or r.status != "completed":
            continue
        script = trace[r.turn_id].script
        model_ms = script.model_ms() + queue_ms * (len(script.steps) + 1)
        out.append((r.sent_at, (r.finished_at - r.sent_at) * 1000 - model_ms))
    return out


def system_figures(
    data: SystemData,
    trace: Mapping[str, TraceTurn],
    protocol: Mapping[str, Any],
    write_tools: Mapping[str, frozenset[str]],
) -> dict[str, Any]:
    budget = float(protocol.get("terminal_budget_s", TERMINAL_BUDGET_S))
    stall_s = float(protocol.get("stall_threshold_s", STALL_THRESHOLD_S))
    window = float(protocol.get("cluster_window_s", CLUSTER_WINDOW_S))
    queue_ms = float(protocol.get("queue_ms", 20.0))
    runs = data.runs
    ended_at = float(data.info.get("ended_at") or max([r.sent_at for r in runs], default=0.0))
    turn_of_run = {r.run_id: trace[r.turn_id] for r in runs}
    finished = {r.run_id: r.finished_at for r in runs if r.finished_at is not None}
    waits, views = analyse(data.sim_records, turn_of_run, queue_ms, ended_at, finished)

    # Terminal: the system reported the run finished within the budget...
    in_budget = [
        r for r in runs if r.finished_at is not None and r.finished_at - r.sent_at <= budget
    ]
    # ...and, ground truth, the provider shows our run(s) ended.
    provider_status: dict[str, str | None] = {}
    for view in views:
        provider_status[view.run_id] = view.status  # the newest provider run per run id wins
    provider_terminal = sum(1 for r in runs if provider_status.get(r.run_id) in TERMINAL)

    latencies = [
        r.finished_at - r.sent_at
        for r in runs
        if r.finished_at is not None and r.status == "completed"
    ]
    added_ms = [added for _, added in added_by_turn(data, trace, queue_ms)]
    step_waits = [w.wait_s for w in waits]
    answered = [w for w in waits if w.answered]
    # A stall: never answered, not cancelled with a reason, and either the provider expired
    # the run or it waited the whole terminal budget. A step the replay's end caught waiting
    # for less than that is "unresolved": too young to call (a backlog, not a verdict).
    unanswered = [
        w for w in waits if not w.answered and provider_status.get(w.run_id) != "cancelled"
    ]
    stalls = [
        w for w in unanswered if provider_status.get(w.run_id) == "expired" or w.wait_s >= budget
    ]
    attempts = [w.attempts for w in waits]
    subs = data.sim_records.get("submissions", [])
    ours = {v.provider_run_id for v in views}
    our_subs = [s for s in subs if s["run_id"] in ours]
    # Per step, not per request: a hedged submission's second request is refused once the
    # first landed (runcoord/provider/assistants.py), and that is no failure. Requests per
    # step are attempts_per_step.
    submitted = {(s["run_id"], s.get("step_id")) for s in our_subs}
    landed = {(s["run_id"], s.get("step_id")) for s in our_subs if s["accepted"]}
    model_steps = [v.tool_steps_reached + (1 if v.completed else 0) for v in views]
    writes = write_figures(runs, data.audit, trace, write_tools, window)
    missing = attribute_missing(
        writes.missing_by_run,
        writes.expected_by_run,
        {r.run_id: r for r in runs},
        data.audit,
        trace,
        journal=data.journal,
        ledger=data.ledger,
        sim_records=data.sim_records,
    )
    creates = data.sim_records.get("counts", {}).get("creates_by_run_id", {})
    sent = len(runs)
    per_10k = 10_000 / writes.write_turns if writes.write_turns else 0.0
    rows_by_cause = writes.rows_by_cause()
    clusters_by_cause = writes.clusters_by_cause()
    redis = data.info.get("redis_ops")
    requests = data.sim_records.get("counts", {}).get("requests", {})
    cpu = data.info.get("cpu_s", {})
    statuses: dict[str, int] = {}
    for r in runs:
        key = r.status or "unfinished"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "runs_sent": sent,
        "turns_sent": sum(1 for r in runs if not r.resubmission),
        "resubmissions_sent": sum(1 for r in runs if r.resubmission),
        "runs_finished": len(finished),
        "statuses": dict(sorted(statuses.items())),
        "terminal_rate": _round(len(in_budget) / sent if sent else None, 4),
        "provider_terminal_rate": _round(provider_terminal / sent if sent else None, 4),
        "provider_runs_per_run": _round(
            sum(creates.get(r.run_id, 0) for r in runs) / sent if sent else None, 4
        ),
        "steps": len(waits),
        "no_stall_rate": _round(
            sum(1 for w in step_waits if w < stall_s) / len(waits) if waits else None, 4
        ),
        "coordinator_stalls": len(stalls),
        "unresolved_steps": len(unanswered) - len(stalls),
        "median_steps_per_turn": statistics.median(model_steps) if model_steps else None,
        "submission_attempts": len(our_subs),
        "submission_success": _round(len(landed) / len(submitted) if submitted else None, 4),
        "attempts_per_step": _round(sum(attempts) / len(attempts) if attempts else None, 3),
        "step_wait_p50_ms": _round(_ms(percentile(step_waits, 50)), 1),
        "step_wait_p99_ms": _round(_ms(percentile(step_waits, 99)), 1),
        "answered_step_wait_p99_ms": _round(_ms(percentile([w.wait_s for w in answered], 99)), 1),
        "p50_turn_s": _round(percentile(latencies, 50)),
        "p95_turn_s": _round(percentile(latencies, 95)),
        "p99_turn_s": _round(percentile(latencies, 99)),
        "coordinator_added_p50_ms": _round(percentile(added_ms, 50), 1),
        "coordinator_added_p99_ms": _round(percentile(added_ms, 99), 1),
        "expected_writes": writes.expected_writes,
        "observed_writes": writes.observed_writes,
        "observed_expected_ratio": _round(writes.ratio, 4),
        "missing_writes": writes.missing_writes,
        "missing_writes_by_cause": missing.by_cause(),
        "missing_writes_evidence": missing.evidence,
        "missing_writes_note": missing.note,
        "missing_writes_detail": missing.detail(),
        "evidence_errors": data.evidence.get("errors", {}),
        "excess_writes": writes.excess_writes,
        "write_turns": writes.write_turns,
        "duplicate_clusters": len(writes.clusters),
        "clusters_by_cause": clusters_by_cause,
        "duplicate_rows_by_cause": rows_by_cause,
        "clusters_per_10k_write_turns": {
            cause: _round(n * per_10k, 1) for cause, n in clusters_by_cause.items()
        },
        "system_duplicates": rows_by_cause["system_duplicate"],
        "system_duplicates_per_10k_write_turns": _round(
            rows_by_cause["system_duplicate"] * per_10k, 1
        ),
        "redis_ops_per_turn": _round(redis / sent if redis is not None and sent else None, 2),
        "provider_requests_per_turn": {route: _round(n / sent, 2) for route, n in requests.items()}
        if sent
        else {},
        "cpu_s": cpu,
        "cpu_ms_per_turn": {proc: _round(seconds * 1000 / sent, 1) for proc, seconds in cpu.items()}
        if sent
        else {},
        "step_hops_ms": _hop_figures(waits, data),
        **(approval_figures(data, trace) or {}),
        "wall_s": data.info.get("wall_s"),
        "faults_fired": sum(1 for f in data.faults if f.get("applicable", True)),
    }


def _hop_figures(waits: Sequence[StepWait], data: SystemData) -> dict[str, dict[str, Any]]:
    """p50/p99 (ms) and count of each hop of a tool step (report/hops.py); empty for a system
    without a journal (the baseline keeps none)."""
    if data.journal is None or data.ledger is None:
        return {}
    hops = step_hops(
        waits, data.journal, data.ledger, data.arrivals, data.sim_records.get("submissions", [])
    )
    return {
        name: {
            "p50": _round(_ms(percentile(hops[name], 50)), 1),
            "p99": _round(_ms(percentile(hops[name], 99)), 1),
            "n": len(hops[name]),
        }
        for name in HOPS
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000

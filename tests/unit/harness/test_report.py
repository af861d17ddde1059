"""The report's computations on small synthetic data: cluster causes, ratios, stall counting."""

from __future__ import annotations

from typing import Any

import pytest

from runcoord.harness.report.data import AuditRow, RunRecord, SystemData
from runcoord.harness.report.figures import percentile, system_figures
from runcoord.harness.report.render import request_rows
from runcoord.harness.report.writes import find_clusters, payload_hash, write_figures
from runcoord.harness.workload.trace import TraceTurn

WRITE_TOOLS = {"create_ticket": frozenset({"t1", "t2"}), "send_email": frozenset({"t1"})}
TICKET = {"subject": "Late #1", "customer_id": "cus_1"}
EMAIL = {"to": "a@example.test", "subject": "Hi"}


def turn(
    turn_id: str,
    tenant: str,
    calls: list[list[tuple[str, dict[str, Any]]]],
    latency_ms: float = 100.0,
) -> TraceTurn:
    return TraceTurn.model_validate(
        {
            "turn_id": turn_id,
            "tenant": tenant,
            "conversation": f"c-{turn_id}",
            "offset_ms": 0,
            "input": "hi",
            "script": {
                "steps": [
                    {
                        "tool_calls": [{"name": n, "arguments": a} for n, a in step],
                        "latency_ms": latency_ms,
                    }
                    for step in calls
                ],
                "final": {"latency_ms": latency_ms},
            },
        }
    )


def run(
    run_id: str,
    turn_id: str,
    *,
    resub: bool = False,
    sent: float = 0.0,
    finished: float | None = 10.0,
    status: str | None = "completed",
) -> RunRecord:
    return RunRecord(run_id, turn_id, "t1", f"c-{turn_id}", resub, sent, finished, status)


def row(
    tool: str,
    body: dict[str, Any],
    run_id: str | None,
    at: float,
    tenant: str = "t1",
    call: str = "call_1",
) -> AuditRow:
    return AuditRow(tool, tenant, run_id, call, payload_hash(body), None, at)


def test_payload_hash_is_canonical() -> None:
    assert payload_hash({"b": 1, "a": "é"}) == payload_hash({"a": "é", "b": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})


def test_clusters_chain_within_the_window_per_tool_tenant_payload() -> None:
    rows = [
        row("create_ticket", TICKET, "r1", 0.0),
        row("create_ticket", TICKET, "r1", 80.0),  # 80 s after the first: same cluster
        row("create_ticket", TICKET, "r1", 165.0),  # 85 s after the second: chained
        row("create_ticket", TICKET, "r1", 400.0),  # alone
        row("create_ticket", TICKET, "r1", 1.0, tenant="t2"),  # another tenant
        row("send_email", TICKET, "r1", 2.0),  # another tool
    ]
    clusters = find_clusters(rows, 90.0)
    assert [len(c.rows) for c in clusters] == [3]


def test_each_extra_row_gets_its_cause() -> None:
    trace = {
        "u1": turn("u1", "t1", [[("create_ticket", TICKET)]]),
        "u2": turn("u2", "t1", [[("create_ticket", TICKET)]]),  # the same ask: legitimate
    }
    runs = [run("r1", "u1"), run("r1.r1", "u1", resub=True), run("r2", "u2")]
    audit = [
        row("create_ticket", TICKET, "r1", 0.0),
        row("create_ticket", TICKET, "r1", 3.0, call="call_1"),  # retry acted again: system
        row("create_ticket", TICKET, "r1.r1", 20.0),  # the client asked again
        row("create_ticket", TICKET, "r2", 40.0),  # another turn asked the same
        row("create_ticket", TICKET, None, 50.0),  # nobody we know
    ]
    figures = write_figures(runs, audit, trace, WRITE_TOOLS)
    (cluster,) = figures.clusters
    assert cluster.causes == [
        "system_duplicate",
        "client_resubmission",
        "legitimate_repeat",
        "unknown",
    ]
    assert cluster.cause == "system_duplicate"
    assert figures.expected_writes == 3
    assert figures.observed_writes == 5
    assert figures.ratio == pytest.approx(5 / 3)
    assert figures.excess_writes == 2  # r1's second action and the unknown row
    assert figures.missing_writes == 0
    assert figures.rows_by_cause()["system_duplicate"] == 1


def test_a_run_that_asks_twice_is_not_a_duplicate_and_disabled_tools_expect_nothing() -> None:
    trace = {
        "u1": turn("u1", "t1", [[("create_ticket", TICKET)], [("create_ticket", TICKET)]]),
        # send_email is not enabled for t2: the coordinator must answer with an error output.
        "u2": turn("u2", "t2", [[("send_email", EMAIL), ("create_ticket", TICKET)]]),
    }
    runs = [run("r1", "u1"), run("r2", "u2")]
    audit = [
        row("create_ticket", TICKET, "r1", 0.0),
        row("create_ticket", TICKET, "r1", 1.0, call="call_2"),
    ]
    figures = write_figures(runs, audit, trace, WRITE_TOOLS)
    assert figures.expected_writes == 3
    assert figures.observed_writes == 2
    assert figures.missing_writes == 1  # r2's ticket (tenant t2) never happened
    assert figures.clusters[0].causes == ["legitimate_repeat"]
    assert figures.write_turns == 2


def records(created: list[dict[str, Any]], subs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"runs": created, "submissions": subs, "counts": {"creates_by_run_id": {}}}


def test_stalls_and_time_in_requires_action_from_the_provider_records() -> None:
    two_steps = turn("u1", "t1", [[("create_ticket", TICKET)], [("send_email", EMAIL)]], 1000)
    one_step = turn("u2", "t1", [[("create_ticket", TICKET)]], 1000)
    trace = {"u1": two_steps, "u2": one_step, "u3": one_step.model_copy(update={"turn_id": "u3"})}
    sim = records(
        [
            # queue 0 ms: u1's step 0 needs outputs at 101.0, step 1 at (103.0 + 1.0).
            {"id": "run_a", "our_run_id": "r1", "created_at": 100.0, "status": "completed"},
            # u2's only step needs outputs at 201.0 and is answered 9 s later: slow, not stuck.
            {"id": "run_b", "our_run_id": "r2", "created_at": 200.0, "status": "completed"},
            # u3's step is never answered: the run waits until it expires (a stall)...
            {"id": "run_c", "our_run_id": "r3", "created_at": 300.0, "status": "expired"},
            {"id": "resp_x", "our_run_id": "r3", "created_at": 300.0, "follow_up": True},
        ],
        [
            {"seq": 1, "run_id": "run_a", "step_id": "s0", "accepted": True, "at": 103.0},
            {"seq": 2, "run_id": "run_a", "step_id": "s1", "accepted": False, "at": 104.5},
            {"seq": 3, "run_id": "run_a", "step_id": "s1", "accepted": True, "at": 105.0},
            {"seq": 4, "run_id": "run_b", "step_id": "s2", "accepted": True, "at": 210.0},
            {"seq": 5, "run_id": "run_c", "step_id": "s3", "accepted": False, "at": 302.0},
        ],
    )
    data = SystemData(
        system="x",
        runs=[
            run("r1", "u1", sent=99.9, finished=106.1),
            run("r2", "u2", sent=199.9, finished=211.1),
            run("r3", "u3", sent=299.9, finished=None, status=None),
        ],
        audit=[],
        sim_records=sim,
        info={"ended_at": 400.0},
    )
    protocol = {"queue_ms": 0.0}
    f = system_figures(data, trace, protocol, WRITE_TOOLS)
    assert f["steps"] == 4
    assert f["no_stall_rate"] == pytest.approx(2 / 4)  # r1's two steps; r2 9 s; r3 99 s
    assert f["coordinator_stalls"] == 1  # expired at the provider
    assert f["unresolved_steps"] == 0
    assert f["attempts_per_step"] == pytest.approx((1 + 2 + 1 + 1) / 4)
    # Per step: s0, s1 (on its second request) and s2 landed; s3 never did.
    assert f["submission_success"] == pytest.approx(3 / 4)
    assert f["terminal_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert f["provider_terminal_rate"] == pytest.approx(1.0)  # expired counts as ended
    assert f["median_steps_per_turn"] == 2  # 3 (r1), 2 (r2), 1 (r3: one step, never done)
    assert f["step_wait_p99_ms"] == pytest.approx(99_000, rel=1e-6)
    # r1: 6.2 s end to end, 3 s of it the model's; r2: 11.2 s, 2 s of it the model's.
    assert f["coordinator_added_p50_ms"] == pytest.approx(3200)
    assert f["coordinator_added_p99_ms"] == pytest.approx(9200)


def test_a_young_unanswered_step_is_unresolved_and_an_old_one_a_stall() -> None:
    one_step = turn("u1", "t1", [[("create_ticket", TICKET)]], 1000)
    trace = {"u1": one_step, "u2": one_step.model_copy(update={"turn_id": "u2"})}
    sim = records(
        [
            {"id": "run_a", "our_run_id": "r1", "created_at": 100.0, "status": "requires_action"},
            {"id": "run_b", "our_run_id": "r2", "created_at": 379.0, "status": "requires_action"},
        ],
        [],
    )
    data = SystemData(
        system="x",
        runs=[
            run("r1", "u1", sent=100.0, finished=None, status=None),
            run("r2", "u2", sent=379.0, finished=None, status=None),
        ],
        audit=[],
        sim_records=sim,
        info={"ended_at": 400.0},
    )
    f = system_figures(data, trace, {"queue_ms": 0.0, "terminal_budget_s": 120}, WRITE_TOOLS)
    assert f["coordinator_stalls"] == 1  # r1: waiting 299 s
    assert f["unresolved_steps"] == 1  # r2: waiting 20 s when the replay ended


def test_a_cancel_with_a_reason_is_not_a_stall() -> None:
    one_step = turn("u1", "t1", [[("create_ticket", TICKET)]], 1000)
    sim = records(
        [{"id": "run_a", "our_run_id": "r1", "created_at": 100.0, "status": "cancelled"}], []
    )
    data = SystemData(
        system="x",
        runs=[run("r1", "u1", sent=100.0, finished=150.0, status="cancelled")],
        audit=[],
        sim_records=sim,
        info={"ended_at": 400.0},
    )
    f = system_figures(data, {"u1": one_step}, {"queue_ms": 0.0}, WRITE_TOOLS)
    assert f["coordinator_stalls"] == 0
    assert f["no_stall_rate"] == 0.0  # it still waited 49 s


def test_provider_requests_are_counted_per_turn_by_route() -> None:
    one_step = turn("u1", "t1", [[("create_ticket", TICKET)]], 1000)
    trace = {"u1": one_step, "u2": one_step.model_copy(update={"turn_id": "u2"})}
    sim = records([], [])
    poll = "GET /v1/threads/{thread_id}/runs/{run_id}"
    sim["counts"]["requests"] = {"POST /v1/threads/{thread_id}/runs": 2, poll: 3}
    data = SystemData(
        system="x",
        runs=[run("r1", "u1", sent=100.0, finished=150.0), run("r2", "u2", sent=101.0)],
        audit=[],
        sim_records=sim,
        info={"ended_at": 400.0},
    )
    f = system_figures(data, trace, {"queue_ms": 0.0}, WRITE_TOOLS)
    assert f["provider_requests_per_turn"] == {"POST /v1/threads/{thread_id}/runs": 1.0, poll: 1.5}
    report = {"systems": {"runcoord": f, "baseline": {}}}
    assert dict(request_rows(report))[poll] == ["1.50", "-"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None

"""A tool step's wait cut into hops (report/hops.py): each hop is the gap between two
hand-overs on record, and a hop with one end missing is left out, not guessed."""

from __future__ import annotations

import pytest

from runcoord.domain import events as ev
from runcoord.domain.model import Output, ToolCall
from runcoord.harness.report.hops import HOPS, step_hops
from runcoord.harness.report.render import cpu_rows, hop_rows
from runcoord.harness.report.steps import StepWait

T0 = 1_800_000_000.0


def _wait(run_id: str, index: int, entered: float) -> StepWait:
    return StepWait(run_id, f"prov-{run_id}", index, entered, 1.0, True, 1)


def _opened(run_id: str, seq: int, step: str, at: float, *calls: str) -> ev.StepOpened:
    return ev.StepOpened(
        run_id=run_id, seq=seq, at_ms=round(at * 1000), step_id=step,
        calls=tuple(ToolCall(c, "search_kb", "{}") for c in calls),
        deadline_ms=0, expires_at_ms=None,
    )  # fmt: skip


def _recorded(run_id: str, seq: int, step: str, at: float, call: str) -> ev.ToolOutputRecorded:
    output = Output(call, "{}", False, "tool", "h")
    return ev.ToolOutputRecorded(
        run_id=run_id, seq=seq, at_ms=round(at * 1000), step_id=step, output=output,
        effect_key=None,
    )  # fmt: skip


def _ledger(kind: str, step: str, claimed: float, completed: float | None) -> dict[str, object]:
    return {"kind": kind, "step_id": step, "claimed_at": claimed, "completed_at": completed}


def test_each_hop_is_the_gap_between_its_two_hand_overs() -> None:
    journal = {
        "r1": [
            _opened("r1", 3, "s1", T0 + 0.100, "c1", "c2"),
            _recorded("r1", 4, "s1", T0 + 0.400, "c1"),
            _recorded("r1", 5, "s1", T0 + 0.450, "c2"),
        ]
    }
    ledger = [
        _ledger("tool_call", "s1", T0 + 0.120, T0 + 0.300),
        _ledger("tool_call", "s1", T0 + 0.130, T0 + 0.420),  # the slower call ends the tools
        _ledger("submit_outputs", "s1", T0 + 0.470, T0 + 0.500),
    ]
    arrivals = [
        {"run_id": "r1", "tool_call_id": "c2", "at": T0 + 0.150},
        {"run_id": "r1", "tool_call_id": "c1", "at": T0 + 0.140},  # the first arrival counts
        {"run_id": "r1", "tool_call_id": "c1", "at": T0 + 0.390},  # a retry: not the first
    ]
    submissions = [
        {"step_id": "s1", "accepted": False, "at": T0 + 0.480},
        {"step_id": "s1", "accepted": True, "at": T0 + 0.490},
    ]
    hops = step_hops([_wait("r1", 0, T0)], journal, ledger, arrivals, submissions)
    got = {name: round(values[0] * 1000) for name, values in hops.items()}
    assert got == {
        "observe": 100,
        "dispatch": 20,
        "to_gateway": 20,
        "tool": 280,
        "record": 30,
        "submit_dispatch": 20,
        "submit": 20,
    }
    assert tuple(got) == HOPS


def test_a_hop_without_both_ends_on_record_is_left_out() -> None:
    # A call refused by policy: no ledger claim, no gateway arrival; never submitted either.
    journal = {"r1": [_opened("r1", 3, "s1", T0 + 0.2, "c1")]}
    hops = step_hops([_wait("r1", 0, T0)], journal, [], [], [])
    assert hops["observe"] == [pytest.approx(0.2)]
    assert all(hops[name] == [] for name in HOPS if name != "observe")


def test_steps_match_by_their_order_in_the_run_and_unknown_runs_are_skipped() -> None:
    journal = {
        "r1": [
            _opened("r1", 5, "s2", T0 + 2.05, "c2"),  # out of order on purpose: seq decides
            _opened("r1", 3, "s1", T0 + 0.05, "c1"),
        ]
    }
    waits = [
        _wait("r1", 0, T0),
        _wait("r1", 1, T0 + 2.0),
        _wait("r1", 2, T0 + 4),
        _wait("rX", 0, T0),
    ]
    hops = step_hops(waits, journal, [], [], [])
    assert [round(s * 1000) for s in hops["observe"]] == [50, 50]


def test_the_report_shows_hops_and_cpu_per_system_and_a_dash_without_them() -> None:
    report = {
        "systems": {
            "runcoord": {
                "step_hops_ms": {name: {"p50": 10.0, "p99": 90.4, "n": 3} for name in HOPS},
                "cpu_ms_per_turn": {"coord-0": 8.52, "exec-tools-0": 14.0},
            },
            "baseline": {"step_hops_ms": {}, "cpu_ms_per_turn": {"base-0": 13.1}},
        }
    }
    hops = dict(hop_rows(report))
    assert list(hops) == list(HOPS)
    assert hops["observe"] == ["10 / 90", "-"]
    assert dict(cpu_rows(report)) == {
        "base-0": ["-", "13.1"],
        "coord-0": ["8.5", "-"],
        "exec-tools-0": ["14.0", "-"],
    }
    assert hop_rows({"systems": {"baseline": {"step_hops_ms": {}}}}) == []

"""bench/step_latency.py's time added per tool step: each step's wait minus that same
step's tool time at the gateway, never one step's figure against another's."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from runcoord.domain import events as ev
from runcoord.domain.model import ToolCall
from runcoord.harness.report.steps import StepWait

T0 = 1_800_000_000.0


def _opened(run_id: str, seq: int, step: str, at: float, call: str) -> ev.StepOpened:
    return ev.StepOpened(
        run_id=run_id, seq=seq, at_ms=round(at * 1000), step_id=step,
        calls=(ToolCall(call, "search_kb", "{}"),), deadline_ms=0, expires_at_ms=None,
    )  # fmt: skip


def _call(run_id: str, step: str, claimed: float, completed: float) -> dict[str, object]:
    return {
        "run_id": run_id,
        "kind": "tool_call",
        "step_id": step,
        "claimed_at": claimed,
        "completed_at": completed,
    }


@pytest.fixture
def bench(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("step_latency")


def test_each_step_loses_its_own_tool_time(bench: ModuleType) -> None:
    journal = {
        "r1": [_opened("r1", 3, "s1", T0 + 0.1, "c1"), _opened("r1", 6, "s2", T0 + 2.1, "c2")],
        "r2": [_opened("r2", 3, "s3", T0 + 0.1, "c3")],
    }
    ledger = [
        _call("r1", "s1", T0 + 0.15, T0 + 1.0),  # a slow tool: 0.8 s of a 1 s wait
        _call("r1", "s2", T0 + 2.15, T0 + 2.3),  # a fast one: 0.1 s of a 0.5 s wait
        _call("r2", "s3", T0 + 0.15, T0 + 0.2),
    ]
    arrivals = [
        {"run_id": "r1", "tool_call_id": "c1", "at": T0 + 0.2},
        {"run_id": "r1", "tool_call_id": "c2", "at": T0 + 2.2},
        # r2's call never reached the gateway (refused by policy): no tool time on record.
    ]
    waits = [
        StepWait("r1", "p1", 0, T0, 1.0, True, 1),
        StepWait("r1", "p1", 1, T0 + 2.0, 0.5, True, 1),
        StepWait("r1", "p1", 2, T0 + 4.0, 9.0, False, 0),  # never answered: left out
        StepWait("r2", "p2", 0, T0, 0.3, True, 1),
    ]
    added = bench.tool_step_added_ms(waits, journal, ledger, arrivals)
    assert added == [pytest.approx(200.0), pytest.approx(400.0)]

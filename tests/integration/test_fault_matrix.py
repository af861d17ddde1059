"""The fault matrix, short: a few of its scenarios (runcoord/harness/plans/matrix/), once each
on a fresh 30-turn trace, through real processes and real faults, judged from the evidence as
the bench judges them (runcoord/harness/faultplan/matrix.py): no excess write, no stall, no
input lost, nothing unexplained, and the fault really fired.

- ``kill-tools-after-send``: the tool executor kills itself (SIGKILL) right after a tool acted
  and answered, before recording it; restarted once the harness saw it die;
- ``pause-tools-after-send``: it stops itself (SIGSTOP) at the same point and stays frozen 40 s,
  past its ledger lease: the second tool executor takes over, then the zombie is woken;
- ``partition-coordinator-reset``: a coordinator in a network namespace of its own is cut off
  from the brokers for 20 s, past its session timeout, then healed.

``bench/fault_matrix.py`` runs every scenario, three times each.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runcoord.config import Settings
from runcoord.harness.faultplan.matrix import load_scenario, run_once
from runcoord.harness.replay.netpart import netns_available
from tests.environment import unavailable
from tests.integration.e2e import SDK_WARNINGS

pytestmark = [pytest.mark.integration, pytest.mark.fault, *SDK_WARNINGS]

TURNS = 30
RATE = 6.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "scenario",
    ["kill-tools-after-send", "pause-tools-after-send", "partition-coordinator-reset"],
)
def test_fault_matrix_short(scenario: str, settings: Settings, tmp_path: Path) -> None:
    if scenario.startswith("partition") and (why := netns_available()):
        unavailable(f"no network namespace on this machine: {why}")
    plan = load_scenario(scenario)
    assert not plan.stack.private  # CI's scenarios run on the shared stack
    row = run_once(
        scenario,
        plan,
        run=1,
        seed=int(time.time()) % 100_000,
        turns=TURNS,
        rate=RATE,
        out=tmp_path,
        settings=settings,
        say=print,
        budget_s=90.0,
    )
    print(f"{scenario}: {row.verdict} in {row.took_s:.0f} s; {row}")
    assert row.error is None, row.error
    assert row.faults_fired > 0 and not row.faults_failed, row.faults_failed
    assert row.runs_sent == TURNS
    assert row.excess == 0 and row.duplicate_keys == 0, row
    assert row.extra_provider_runs == 0, row
    assert row.stalls == 0, row
    assert row.inputs_lost == 0, (row.lost_runs, row.notes)
    assert row.unexplained == 0, row.missing_by_cause
    assert row.verdict == "PASS", row.reasons

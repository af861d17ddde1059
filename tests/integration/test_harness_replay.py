"""The harness end to end, short: 30 turns without faults through the baseline and runcoord,
real processes on the real stack, and the report's figures read back from the evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcoord.config import REPO_ROOT, Settings
from runcoord.harness.faultplan import load_plan
from runcoord.harness.replay.run import ReplayConfig, replay
from runcoord.harness.report.build import build_report
from runcoord.harness.report.data import load_replay
from runcoord.harness.workload.generate import GeneratorConfig, generate
from runcoord.harness.workload.trace import write_trace
from runcoord.registry import load_registry

pytestmark = [
    pytest.mark.integration,
    # The driver creates Assistants threads with the SDK, which marks that API deprecated.
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]


@pytest.mark.timeout(600)
def test_thirty_turns_without_faults(settings: Settings, tmp_path: Path) -> None:
    trace = generate(
        GeneratorConfig(turns=30, seed=5, rate=10.0), load_registry(REPO_ROOT / "tools.yaml")
    )
    write_trace(tmp_path / "trace.jsonl", trace)
    config = ReplayConfig(
        trace_path=tmp_path / "trace.jsonl",
        plan=load_plan("none"),
        out=tmp_path / "replay",
        systems=("baseline", "runcoord"),
        rate=10.0,
        coordinators=1,
        executors=1,
        budget_s=90.0,
    )
    replay(config, trace, settings, print)
    report = build_report(load_replay(tmp_path / "replay"))
    expected = sum(
        1
        for turn in trace
        for call in turn.script.calls()
        if turn.tenant in report["protocol"]["write_tools"].get(call.name, [])
    )
    assert expected > 0
    for name in ("baseline", "runcoord"):
        figures = report["systems"][name]
        assert figures["turns_sent"] == 30, name
        assert figures["terminal_rate"] == 1.0, (name, figures["statuses"])
        assert figures["provider_terminal_rate"] == 1.0, name
        assert figures["provider_runs_per_run"] == 1.0, name
        assert figures["expected_writes"] == expected, name
        assert figures["observed_writes"] == expected, name
        assert figures["observed_expected_ratio"] == 1.0, name
        assert figures["system_duplicates"] == 0, name
        assert figures["coordinator_stalls"] == 0, name
        assert figures["steps"] == sum(1 for t in trace for _ in t.script.steps), name
        assert figures["submission_success"] == 1.0, name
        assert figures["p50_turn_s"] is not None and figures["p50_turn_s"] > 0, name

"""The harness end to end, short: 30 turns without faults through the baseline and runcoord,
real processes on the real stack, and the report's figures read back from the evidence; then 30
turns whose post_note writes all fail, each missing write explained from the evidence, and a
run's story told from the evidence folder after the replay removed its topics and database."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

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


# Every post_note fails before acting (503), so runcoord meets an unknown outcome of a tool
# with no key and no lookup and must not re-send it; update_crm is slowed past its timeout now
# and then (it reconciles by lookup). Windows run past the send window, for the last steps.
MISSING_PLAN = {
    "name": "missing-writes",
    "description": "post_note always 503; update_crm sometimes past its timeout",
    "seed": 3,
    "faults": [
        {"kind": "gateway_errors", "at": 0, "duration": "400%", "rate": 1.0,
         "tools": ["post_note"]},
        {"kind": "gateway_latency", "at": 0, "duration": "400%", "rate": 0.5, "ms": 2500,
         "tools": ["update_crm"]},
    ],
}  # fmt: skip


@pytest.mark.timeout(600)
def test_missing_writes_are_explained_and_the_evidence_outlives_the_replay(
    settings: Settings, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from runcoord.forensics.cli import app as forensics_app
    from runcoord.harness.faultplan.model import parse_plan
    from runcoord.kafka import TopicNames

    trace = generate(
        GeneratorConfig(turns=30, seed=5, rate=10.0), load_registry(REPO_ROOT / "tools.yaml")
    )
    notes = sum(
        1 for t in trace for c in t.script.calls() if c.name == "post_note" and t.tenant != "t5"
    )
    assert notes > 0
    write_trace(tmp_path / "trace.jsonl", trace)
    out = tmp_path / "replay"
    config = ReplayConfig(
        trace_path=tmp_path / "trace.jsonl",
        plan=parse_plan(MISSING_PLAN),
        out=out,
        systems=("runcoord",),
        rate=10.0,
        coordinators=1,
        executors=1,
        budget_s=90.0,
    )
    replay(config, trace, settings, print)

    report = build_report(load_replay(out))
    figures = report["systems"]["runcoord"]
    by_cause = figures["missing_writes_by_cause"]
    unexplained = [w for w in figures["missing_writes_detail"] if w["cause"] == "unexplained"]
    assert by_cause["unexplained"] == 0, unexplained
    # Each post_note the gateway refused is a missing write (a write with no key and no
    # lookup is never sent twice). The windows close 12 s in; on a slow machine a last
    # post_note can come after that and act, so count the refused ones, not the trace's.
    drawn = next(
        json.loads(line)["counts"]
        for line in (out / "runcoord" / "faults.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "gateway_drawn"
    )
    refused = drawn.get("post_note.error_before_act", 0)
    assert 0 < refused <= notes, drawn
    assert figures["missing_writes"] >= refused, figures["missing_writes_detail"]
    assert sum(by_cause.values()) == figures["missing_writes"], by_cause
    assert by_cause.get("unknown_outcome_not_retried", 0) >= refused, by_cause
    assert figures["missing_writes_evidence"] == "journal+ledger"
    assert figures["evidence_errors"] == {}

    # The replay deleted its topics and dropped its database; the story comes from the files.
    system = out / "runcoord"
    info = json.loads((system / "system.json").read_text())
    topics = TopicNames.with_prefix(info["prefix"])
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    assert topics.events not in admin.list_topics(timeout=30).topics
    with psycopg.connect(settings.dsn, connect_timeout=10) as conn:
        gone = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (info["database"],)
        ).fetchone()
    assert gone == (0,)
    note = next(
        w for w in figures["missing_writes_detail"] if w["cause"] == "unknown_outcome_not_retried"
    )
    result = CliRunner().invoke(
        forensics_app, ["run", note["run_id"], "--evidence", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"Run {note['run_id']}" in result.output
    assert note["tool_call_id"] in result.output
    assert "unknown" in result.output
    # The same story, as JSON: the call's outcome is unknown and nothing acted for it.
    result = CliRunner().invoke(
        forensics_app,
        ["run", note["run_id"], "--evidence", str(system), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    story = json.loads(result.output)
    call = next(c for c in story["calls"] if c["tool_call_id"] == note["tool_call_id"])
    assert call["outcome"] == "unknown", call
    assert call["actions"] == 0, call

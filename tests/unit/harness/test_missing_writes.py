"""Why each missing write is missing (runcoord/harness/report/missing.py), on small synthetic
evidence: every rule, ``unexplained`` for what no rule explains, the provider-records rules of a
system without a journal, and the evidence files read back (report and forensics)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from runcoord.domain import error_output
from runcoord.domain import events as ev
from runcoord.domain.ids import effect_key
from runcoord.domain.model import Output, ToolCall
from runcoord.forensics.evidence import (
    JOURNAL,
    LEDGER,
    MANIFEST,
    dumps,
    event_line,
    gather_from_evidence,
)
from runcoord.forensics.timeline import build_story
from runcoord.harness.report.data import AuditRow, RunRecord, load_system, write_jsonl
from runcoord.harness.report.figures import system_figures
from runcoord.harness.report.missing import CAUSES, attribute_missing
from runcoord.harness.report.writes import payload_hash, write_figures
from runcoord.harness.workload.trace import TraceTurn

WRITE_TOOLS = {"post_note": frozenset({"t1"}), "create_ticket": frozenset({"t1"})}
MAYBE = "The action may have been performed; it was not retried, to avoid doing it twice."


def note(n: int) -> dict[str, Any]:
    return {"text": f"note {n}"}


def turn(turn_id: str, steps: list[list[tuple[str, dict[str, Any]]]]) -> TraceTurn:
    return TraceTurn.model_validate(
        {
            "turn_id": turn_id,
            "tenant": "t1",
            "conversation": f"c-{turn_id}",
            "offset_ms": 0,
            "input": "hi",
            "script": {
                "steps": [
                    {"tool_calls": [{"name": n, "arguments": a} for n, a in step], "latency_ms": 10}
                    for step in steps
                ],
                "final": {"latency_ms": 10},
            },
        }
    )


def record(run_id: str, status: str | None = "completed") -> RunRecord:
    return RunRecord(run_id, run_id, "t1", f"c-{run_id}", False, 0.0, 1.0, status, None)


class Journal:
    """A run's journal, written the way the coordinator would (seq by seq)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[ev.JournalEvent] = []

    def _next(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": len(self.events) + 1,
            "at_ms": 1000 + len(self.events),
        }

    def accepted(self) -> Journal:
        self.events.append(
            ev.RunAccepted(
                **self._next(),
                tenant="t1",
                thread_id="th",
                assistant_id="a",
                provider="assistants",
                input="hi",
                run_deadline_ms=10**9,
                create_key="ck",
            )
        )
        return self

    def step(self, step_id: str, *calls: tuple[str, str, dict[str, Any]]) -> Journal:
        self.events.append(
            ev.StepOpened(
                **self._next(),
                step_id=step_id,
                calls=tuple(ToolCall(cid, name, json.dumps(args)) for cid, name, args in calls),
                deadline_ms=10**9,
                expires_at_ms=None,
            )
        )
        return self

    def output(self, step_id: str, call_id: str, text: str, source: str = "tool") -> Journal:
        out = Output(call_id, text, text.startswith('{"error"'), source, payload_hash(text))
        self.events.append(
            ev.ToolOutputRecorded(**self._next(), step_id=step_id, output=out, effect_key=None)
        )
        return self

    def finished(self, status: str, reason: str | None = None) -> Journal:
        self.events.append(ev.RunFinished(**self._next(), status=status, reason=reason))
        return self


def ledger_row(
    run_id: str,
    call_id: str,
    state: str,
    output: str | None = None,
    *,
    sent: bool = True,
) -> dict[str, Any]:
    result = None if output is None else {"output": output, "is_error": output.startswith('{"e')}
    return {
        "effect_key": f"ek-{run_id}-{call_id}",
        "kind": "tool_call",
        "tenant": "t1",
        "run_id": run_id,
        "step_id": "s1",
        "tool_call_id": call_id,
        "state": state,
        "fencing_token": 1,
        "attempts": 1,
        "lease_owner": "exec-tools-0",
        "claimed_at": "2026-01-01T00:00:00+00:00",
        "sent_at": "2026-01-01T00:00:00.100000+00:00" if sent else None,
        "completed_at": None if state == "claimed" else "2026-01-01T00:00:01+00:00",
        "result": result,
        "error": None,
    }


def causes(
    turns: list[TraceTurn],
    journals: list[Journal],
    ledger: list[dict[str, Any]] | None,
    audit: list[AuditRow] = (),  # type: ignore[assignment]
    statuses: dict[str, str | None] | None = None,
    records: dict[str, Any] | None = None,
    with_journal: bool = True,
) -> tuple[int, dict[str, int], list[dict[str, Any]]]:
    trace = {t.turn_id: t for t in turns}
    runs = [record(t.turn_id, (statuses or {}).get(t.turn_id, "completed")) for t in turns]
    writes = write_figures(runs, list(audit), trace, WRITE_TOOLS)
    figures = attribute_missing(
        writes.missing_by_run,
        writes.expected_by_run,
        {r.run_id: r for r in runs},
        list(audit),
        trace,
        journal={j.run_id: j.events for j in journals} if with_journal else None,
        ledger=ledger,
        sim_records=records or {},
    )
    return writes.missing_writes, figures.by_cause(), figures.detail()


def acted(run_id: str, call_id: str, body: dict[str, Any], tool: str = "post_note") -> AuditRow:
    return AuditRow(tool, "t1", run_id, call_id, payload_hash(body), None, 1.0)


def test_each_call_the_journal_shows_gets_the_first_rule_that_holds() -> None:
    calls = [("post_note", note(n)) for n in range(8)]
    t = turn("r1", [calls])
    j = (
        Journal("r1")
        .accepted()
        .step("s1", *((f"c{n}", name, a) for n, (name, a) in enumerate(calls)))
    )
    j.output("s1", "c0", error_output("not_enabled", "post_note is off"), source="policy")
    j.output("s1", "c1", error_output("unknown_outcome", MAYBE))
    j.output("s1", "c2", error_output("unknown_outcome", f"no answer. {MAYBE}"))
    j.output("s1", "c3", error_output("timeout", "did not answer"))
    j.output("s1", "c4", error_output("tool_error", "HTTP 422: text too long"))
    j.output("s1", "c5", error_output("timeout", "No result before the deadline."), "deadline")
    ledger = [
        ledger_row("r1", "c1", "unknown", error_output("unknown_outcome", MAYBE)),
        ledger_row(
            "r1",
            "c2",
            "unknown",
            error_output(
                "unknown_outcome", f"post_note did not answer before the step deadline. {MAYBE}"
            ),
        ),
        ledger_row(
            "r1",
            "c3",
            "failed",
            error_output("timeout", "post_note did not answer before the step deadline."),
            sent=False,
        ),
        ledger_row("r1", "c4", "succeeded", error_output("tool_error", "HTTP 422")),
        ledger_row("r1", "c5", "claimed", sent=False),
        # c6: no ledger row, no output; c7 acted.
    ]
    j.finished("cancelled", "run budget exceeded")
    missing, by_cause, detail = causes([t], [j], ledger, [acted("r1", "c7", note(7))])
    assert missing == 7
    assert by_cause == {
        "not_enabled": 1,
        "unknown_outcome_not_retried": 1,
        "step_deadline": 3,  # unknown at the deadline, a timeout, the deadline's own output
        "tool_refused": 1,
        "run_ended_before_execution": 1,
        "unexplained": 0,
    }
    by_call = {d["tool_call_id"]: d["cause"] for d in detail}
    assert by_call["c1"] == "unknown_outcome_not_retried"
    assert by_call["c2"] == by_call["c3"] == by_call["c5"] == "step_deadline"
    assert by_call["c6"] == "run_ended_before_execution"
    assert "c7" not in by_call
    assert set(by_cause) <= set(CAUSES)


def test_writes_the_provider_never_asked_for_get_the_runs_ending() -> None:
    one = [[("post_note", note(1))], [("create_ticket", {"subject": "s"})]]
    turns = [turn(r, one) for r in ("gone", "failed", "done", "open")]
    journals = [
        Journal("failed").accepted().step("s1", ("a", "post_note", note(1))).finished("failed"),
        Journal("done").accepted().step("s1", ("a", "post_note", note(1))).finished("completed"),
        Journal("open").accepted().step("s1", ("a", "post_note", note(1))),
    ]
    audit = [acted(r, "a", note(1)) for r in ("failed", "done", "open")]
    missing, by_cause, detail = causes(turns, journals, [], audit)
    assert missing == 5  # "gone" misses both writes, the others the ticket of step 2
    assert by_cause == {
        "run_ended_before_dispatch": 1,
        "provider_did_not_ask": 1,
        "run_not_accepted": 2,
        "run_unfinished_at_end": 1,
        "unexplained": 0,
    }
    assert {d["run_id"]: d["cause"] for d in detail if d["tool"] == "create_ticket"} == {
        "gone": "run_not_accepted",
        "failed": "run_ended_before_dispatch",
        "done": "provider_did_not_ask",
        "open": "run_unfinished_at_end",
    }


def test_unexplained_counts_what_no_rule_explains() -> None:
    t = turn("r1", [[("post_note", note(1)), ("post_note", note(2))]])
    j = (
        Journal("r1")
        .accepted()
        .step("s1", ("a", "post_note", note(1)), ("b", "post_note", note(2)))
    )
    j.output("s1", "a", '{"note_id": "note-0000001"}')
    j.output("s1", "b", '{"note_id": "note-0000002"}').finished("completed")
    # The ledger says the tool answered a note for "a", yet the audit log has no action: no rule
    # explains that (it would be a lost action, or an audit log that lies). "b" has no ledger
    # row but an output from the tool: nothing explains that either.
    ledger = [ledger_row("r1", "a", "succeeded", '{"note_id": "note-0000001"}')]
    missing, by_cause, detail = causes([t], [j], ledger)
    assert missing == 2
    assert by_cause == {"unexplained": 2}
    assert sum(by_cause.values()) == missing
    whys = sorted(d["why"] for d in detail)
    assert "but the audit log has no action" in whys[0]
    assert "output from tool" in whys[1]


def test_a_call_that_acted_is_never_blamed_for_its_twin() -> None:
    # The script asks for the same note twice; one call acted, the other met an unknown outcome.
    t = turn("r1", [[("post_note", note(1))], [("post_note", note(1))]])
    j = Journal("r1").accepted().step("s1", ("a", "post_note", note(1)))
    j.output("s1", "a", '{"note_id": "note-0000001"}')
    j.step("s2", ("b", "post_note", note(1)))
    j.output("s2", "b", error_output("unknown_outcome", MAYBE)).finished("completed")
    ledger = [
        ledger_row("r1", "a", "succeeded", '{"note_id": "note-0000001"}'),
        ledger_row("r1", "b", "unknown", error_output("unknown_outcome", MAYBE)),
    ]
    missing, by_cause, detail = causes([t], [j], ledger, [acted("r1", "a", note(1))])
    assert (missing, by_cause) == (1, {"unknown_outcome_not_retried": 1, "unexplained": 0})
    assert detail[0]["tool_call_id"] == "b"


def test_without_a_journal_the_provider_records_speak() -> None:
    steps = [[("post_note", note(1))], [("post_note", note(2))], [("post_note", note(3))]]
    turns = [turn(r, steps) for r in ("none", "waits", "answered", "cancelled")]
    records = {
        "runs": [
            {"id": "p-waits", "our_run_id": "waits", "status": "requires_action", "created_at": 1},
            {"id": "p-answered", "our_run_id": "answered", "status": "completed", "created_at": 1},
            {"id": "p-cancel", "our_run_id": "cancelled", "status": "cancelled", "created_at": 1},
        ],
        "submissions": [
            {"run_id": "p-waits", "accepted": True},
            {"run_id": "p-answered", "accepted": True},
            {"run_id": "p-answered", "accepted": True},
            {"run_id": "p-answered", "accepted": True},
        ],
    }
    audit = [acted("waits", "x", note(1)), acted("answered", "x", note(1))]
    audit += [acted("answered", "y", note(3))]
    missing, by_cause, detail = causes(
        turns,
        [],
        None,
        audit,
        statuses={"none": "failed", "waits": None, "answered": "completed", "cancelled": "failed"},
        records=records,
        with_journal=False,
    )
    assert missing == 3 + 2 + 1 + 3
    assert by_cause == {
        # none: no provider run, the run failed (3); waits: step 2 never reached (1);
        # cancelled: steps 1-3, the provider run cancelled (3)
        "run_ended_before_dispatch": 6,
        "step_never_answered": 1,  # waits: step 1 asked, never answered
        "run_unfinished_at_end": 1,  # waits: step 2, not reached yet
        "unexplained": 1,  # answered: step 1 answered, its note never made
    }
    assert [d["run_id"] for d in detail if d["cause"] == "unexplained"] == ["answered"]


def test_the_evidence_files_explain_the_report_and_tell_the_story(tmp_path: Path) -> None:
    folder = tmp_path / "runcoord"
    folder.mkdir()
    t = turn("r1", [[("post_note", note(1)), ("create_ticket", {"subject": "s"})]])
    j = Journal("r1").accepted()
    j.step("s1", ("a", "post_note", note(1)), ("b", "create_ticket", {"subject": "s"}))
    j.output("s1", "a", error_output("unknown_outcome", MAYBE))
    j.output("s1", "b", '{"ticket_id": "TCK-0000001", "status": "open", "subject": "s"}')
    j.finished("completed")
    with (folder / JOURNAL).open("w") as out:
        for offset, event in enumerate(j.events):
            out.write(dumps(event_line(event, 3, offset)) + "\n")
    key = effect_key(
        tenant="t1", thread_id="th", run_id="r1", step="s1", tool_call_id="a", kind="tool_call"
    )
    row = {**ledger_row("r1", "a", "unknown", error_output("unknown_outcome", MAYBE))}
    row["effect_key"] = key
    (folder / LEDGER).write_text(dumps(row) + "\n")
    (folder / MANIFEST).write_text(json.dumps({"files": {}, "errors": {}}))
    write_jsonl(folder / "runs.jsonl", [record("r1")])
    write_jsonl(folder / "audit.jsonl", [acted("r1", "b", {"subject": "s"}, "create_ticket")])

    data = load_system(folder)
    assert data.journal is not None and len(data.journal["r1"]) == 5
    figures = system_figures(data, {"r1": t}, {}, WRITE_TOOLS)
    assert figures["missing_writes"] == 1
    assert figures["missing_writes_by_cause"] == {
        "unknown_outcome_not_retried": 1,
        "unexplained": 0,
    }
    assert figures["missing_writes_evidence"] == "journal+ledger"

    facts = gather_from_evidence(folder, "r1")
    assert facts is not None and facts.run.phase == "completed" and facts.missing_seqs == []
    assert [e.offset for e in facts.events] == list(range(5))
    assert [led.state for led in facts.ledger] == ["unknown"]
    story = build_story(facts)
    assert story.headline.startswith("Run r1 (tenant t1) completed")
    outcomes = {c.tool_call_id: (c.outcome, c.actions) for c in story.calls}
    assert outcomes == {"a": ("unknown", 0), "b": ("succeeded", 1)}
    assert gather_from_evidence(folder, "nobody") is None


def test_by_cause_always_has_unexplained_and_counts_add_up() -> None:
    t = turn("r1", [[("post_note", note(1))]])
    j = Journal("r1").accepted().step("s1", ("a", "post_note", note(1)))
    j.output("s1", "a", '{"note_id": "note-0000001"}').finished("completed")
    missing, by_cause, _ = causes([t], [j], [], [acted("r1", "a", note(1))])
    assert (missing, by_cause) == (0, {"unexplained": 0})
    assert Counter(by_cause).total() == missing

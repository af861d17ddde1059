"""The timeline explainer: what each tool call amounts to, in a support engineer's words."""

from __future__ import annotations

import json

import pytest

from runcoord.domain import events as ev
from runcoord.domain.ids import effect_key
from runcoord.domain.model import Output, ToolCall
from runcoord.forensics.explain import CallFacts, StepFacts, explain_call, explain_step
from runcoord.forensics.facts import AuditEntry, JournalEntry, LedgerEntry, RunFacts, ToolInfo
from runcoord.forensics.projection import RunRow
from runcoord.forensics.timeline import build_story

TICKET = ToolInfo("create_ticket", write=True, idempotency="key", lookup=False, timeout_ms=2000)
NOTE = ToolInfo("post_note", write=True, idempotency="none", lookup=False, timeout_ms=3000)
T0 = 1_000_000


def ledger(state: str, *, sent: int, attempts: int = 1, token: int = 1) -> LedgerEntry:
    return LedgerEntry("ek1_x", "tool_call", state, token, attempts, "tools-0", T0, T0 + sent,
                       T0 + sent + 10, None, None)  # fmt: skip


def action(n: int, at: int, response: object = None, key: str = "ek1_x") -> AuditEntry:
    return AuditEntry(n, "create_ticket", "c1", "ph", key, 1, T0 + at, response)


def call_facts(
    tool: ToolInfo,
    led: LedgerEntry | None,
    actions: list[AuditEntry],
    output: str = '{"ticket_id": "TCK-0000007"}',
    error: bool = False,
) -> CallFacts:
    return CallFacts(
        call=ToolCall("c1", tool.name, "{}"),
        step_id="s1",
        effect_key="ek1_x",
        dispatched_at_ms=T0 - 5,
        tool=tool,
        ledger=led,
        actions=actions,
        output=Output("c1", output, error, "tool", "h"),
        output_at_ms=T0 + 2200,
    )  # fmt: skip


def test_the_incident_slow_success_retried_with_the_same_key() -> None:
    story = explain_call(
        call_facts(
            TICKET, ledger("succeeded", sent=2110), [action(1, 160, {"ticket_id": "TCK-0000007"})]
        )
    )
    assert story.retried and not story.duplicate and story.actions == 1
    assert story.outcome == "succeeded"
    assert story.explanation == (
        "tool create_ticket (write, takes idempotency keys) was dispatched; it timed out after "
        "2.0 s; retried with the same idempotency key; the gateway returned the first ticket "
        "(TCK-0000007); one ticket exists."
    )


def test_a_prompt_answer_is_one_action_without_retry() -> None:
    story = explain_call(call_facts(TICKET, ledger("succeeded", sent=30), [action(1, 40)]))
    assert not story.retried
    assert story.explanation.endswith("was dispatched; one ticket exists.")


def test_an_unknown_outcome_says_the_model_was_told_and_what_the_audit_shows() -> None:
    out = json.dumps({"error": {"type": "unknown_outcome", "message": "may have"}})
    story = explain_call(call_facts(NOTE, ledger("unknown", sent=20), [action(1, 50)], out, True))
    assert story.outcome == "unknown" and not story.retried
    assert "its outcome is unknown: post_note takes no idempotency key and has no lookup" in (
        story.explanation
    )
    assert "the gateway's audit log shows it did act: one note exists" in story.explanation


def test_two_actions_for_one_call_is_a_duplicate() -> None:
    story = explain_call(
        call_facts(TICKET, ledger("succeeded", sent=10, attempts=2, token=2),
                   [action(1, 20), action(2, 3000, key="other")])
    )  # fmt: skip
    assert story.duplicate and story.actions == 2
    assert "lease lapsed 1 time(s)" in story.explanation
    assert "DUPLICATE: the gateway acted 2 times under different keys" in story.explanation


@pytest.mark.parametrize(
    ("reason", "submitted", "expected"),
    [
        ("complete", 1500, "all outputs were in after 1.2 s, 18.8 s before the deadline"),
        ("deadline", None, "the deadline fired after 20.0 s: the missing outputs were answered"),
    ],
)
def test_step_explanations(reason: str, submitted: int | None, expected: str) -> None:
    at = 1200 if reason == "complete" else 20_000
    text = explain_step(
        StepFacts("s1", 0, 20_000, 2, at, reason, submitted, "submitted" if submitted else None,
                  1 if submitted else None, False)
    )  # fmt: skip
    assert expected in text
    assert ("submitted once (submitted, 1 attempt(s)) 0.3 s later" in text) == bool(submitted)


def test_the_story_puts_every_source_on_one_clock_with_gaps() -> None:
    run = RunRow("r1", "t1", "th", "assistants", "ih", 2, 10, 14, 3, "completed", T0, T0 + 3000,
                 finished_at_ms=T0 + 3000, steps=1)  # fmt: skip
    call = ToolCall("c1", "create_ticket", "{}")
    key = effect_key(tenant="t1", thread_id="th", run_id="r1", step="s1", tool_call_id="c1",
                     kind="tool_call")  # fmt: skip
    events = [
        JournalEntry(ev.StepOpened(run_id="r1", seq=1, at_ms=T0, step_id="s1", calls=(call,),
                                   deadline_ms=T0 + 20_000, expires_at_ms=None), 2, 10),
        JournalEntry(ev.ToolOutputRecorded(run_id="r1", seq=2, at_ms=T0 + 2200, step_id="s1",
                                           output=Output("c1", "{}", False, "tool", "h"),
                                           effect_key=key), 2, 12),
        JournalEntry(ev.RunFinished(run_id="r1", seq=3, at_ms=T0 + 3000, status="completed",
                                    reason=None), 2, 14),
    ]  # fmt: skip
    led = LedgerEntry(key, "tool_call", "succeeded", 1, 1, "tools-0", T0 + 50, T0 + 2100,
                      T0 + 2150, None, None)  # fmt: skip
    story = build_story(
        RunFacts(run=run, events=events, ledger=[led], audit=[action(9, 100)],
                 tools={"create_ticket": TICKET})
    )  # fmt: skip
    assert [ln.source for ln in story.lines] == [
        "journal", "ledger", "gateway", "ledger", "ledger", "journal", "journal",
    ]  # fmt: skip
    assert [ln.since_start_ms for ln in story.lines] == [0, 50, 100, 2100, 2150, 2200, 3000]
    assert story.lines[3].gap_ms == 2000
    assert story.calls[0].retried and story.calls[0].actions == 1
    assert "no side effect happened twice" in story.headline

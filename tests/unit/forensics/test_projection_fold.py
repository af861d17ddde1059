"""The projection's fold: journal order, redelivery, and phases as the coordinator sees them."""

from __future__ import annotations

from runcoord.domain import events as ev
from runcoord.domain.model import ToolCall
from runcoord.forensics.projection import RunRow, event_row, fold, step_row


def journal() -> list[ev.JournalEvent]:
    r = "run-1"
    return [
        ev.RunAccepted(
            run_id=r,
            seq=1,
            at_ms=1000,
            tenant="t1",
            thread_id="th",
            assistant_id="a",
            provider="assistants",
            input="hi",
            run_deadline_ms=601_000,
            create_key="ek1_c",
        ),
        ev.ProviderRunCreated(
            run_id=r, seq=2, at_ms=1100, provider_run_id="pr", status="queued", expires_at_ms=None,
            reconciled=False,
        ),
        ev.StepOpened(
            run_id=r, seq=3, at_ms=1200, step_id="s1",
            calls=(ToolCall("c1", "create_ticket", "{}"),), deadline_ms=21_200, expires_at_ms=None,
        ),
        ev.SubmissionRequested(run_id=r, seq=4, at_ms=1300, step_id="s1", effect_key="ek1_s",
                               reason="complete"),
        ev.CancelRequested(run_id=r, seq=5, at_ms=1400, reason="user", give_up_at_ms=31_400),
        ev.RunStatusChanged(run_id=r, seq=6, at_ms=1500, status="in_progress", closed_step=None,
                            expires_at_ms=None),
        ev.RunFinished(run_id=r, seq=7, at_ms=1600, status="cancelled", reason="user"),
    ]  # fmt: skip


def project(events: list[ev.JournalEvent]) -> RunRow | None:
    row: RunRow | None = None
    for offset, e in enumerate(events):
        row = fold(row, e, 3, 100 + offset)
    return row


def test_a_run_is_folded_in_journal_order() -> None:
    row = project(journal())
    assert row is not None
    assert (row.tenant, row.thread_id, row.partition) == ("t1", "th", 3)
    assert (row.first_offset, row.last_offset, row.last_seq) == (100, 106, 7)
    assert row.phase == "cancelled" and row.terminal and row.outcome == "user"
    assert row.steps == 1 and row.provider_run_id == "pr"
    assert row.watch_seq == 6  # RunStatusChanged started the latest watch
    assert row.finished_at_ms == 1600


def test_redelivered_events_change_nothing() -> None:
    events = journal()
    once = project(events)
    # A batch redelivered after a crash: every event again, and some out of order.
    twice = project(events + events[2:5] + events[::-1])
    assert twice == once


def test_a_working_status_does_not_undo_a_pending_cancel() -> None:
    row = project(journal()[:6])
    assert row is not None and row.phase == "cancelling"


def test_events_before_run_accepted_make_no_row_but_are_indexed() -> None:
    late = journal()[3]
    assert fold(None, late, 0, 7) is None
    assert event_row(late, 0, 7).event_type == "SubmissionRequested"


def test_step_facts() -> None:
    opened, requested = (step_row(e) for e in journal()[2:4])
    assert opened is not None and opened.opened and opened.deadline_ms == 21_200
    assert requested is not None and requested.submission_reason == "complete"

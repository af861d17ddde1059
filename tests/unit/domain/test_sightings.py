"""A write that followed the run (a streamed create or submission) reports where the run went:
the coordinator takes that as the current watch's observation, once, and only when it is news."""

from __future__ import annotations

from runcoord.domain import Phase, fold
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.decide import Decision
from tests.unit.domain.helpers import Driver, call, start


def waiting(step: str, *calls: int) -> inp.Sighting:
    return inp.Sighting("requires_action", step, tuple(call(i) for i in calls), 600_000, None)


def created(d: Driver, seen: inp.Sighting | None) -> Decision:
    status = seen.status if seen is not None else "queued"
    r = d.run
    return d.feed(
        inp.RunCreated(r.run_id, r.create_key, "prov_1", status, 600_000, False, seen=seen)
    )


def submitted(d: Driver, seen: inp.Sighting | None, *, key: str | None = None) -> Decision:
    step = d.run.step
    assert step is not None and step.submission_key is not None
    return d.feed(
        inp.SubmissionResult(
            d.run.run_id,
            key or step.submission_key,
            step.step_id,
            "submitted",
            1,
            None,
            seen=seen,
        )
    )


def watches(decision: Decision) -> list[tuple[str, str | None]]:
    return [
        (i.since_status, i.since_step)
        for i in decision.intents
        if isinstance(i, it.ObserveRunIntent)
    ]


def tools(decision: Decision) -> list[str]:
    return [i.tool_call_id for i in decision.intents if isinstance(i, it.ToolCallIntent)]


def at_first_step() -> Driver:
    d = Driver()
    d.feed(start())
    created(d, waiting("s1", 1))
    d.result("call_1")
    assert d.run.phase is Phase.SUBMITTING
    return d


def test_a_create_that_saw_the_first_step_opens_it_without_a_watch_of_the_working_run() -> None:
    d = Driver()
    d.feed(start())
    out = created(d, waiting("s1", 1, 2))
    assert tools(out) == ["call_1", "call_2"]
    # One watch, of the waiting step: none was spent on a run the create saw stop working.
    assert watches(out) == [("requires_action", "s1")]
    assert d.run.phase is Phase.REQUIRES_ACTION
    assert fold(d.journal) == d.state  # type: ignore[arg-type]


def test_a_create_without_a_sighting_watches_the_working_run() -> None:
    d = Driver()
    d.feed(start())
    assert watches(created(d, None)) == [("queued", None)]


def test_a_submission_that_saw_the_next_step_closes_this_one_and_opens_that() -> None:
    d = at_first_step()
    out = submitted(d, waiting("s2", 3))
    kinds = [type(e) for e in out.events]
    assert kinds[:2] == [ev.StepSubmitted, ev.StepOpened]
    assert tools(out) == ["call_3"]
    assert watches(out) == [("requires_action", "s2")]
    assert "s1" in d.run.closed_steps and d.run.open_step.step_id == "s2"  # type: ignore[union-attr]


def ended(decision: Decision) -> list[int]:
    return [i.watch for i in decision.intents if isinstance(i, it.EndWatchIntent)]


def test_a_submission_that_saw_the_run_finish_finishes_it_and_ends_the_step_watch() -> None:
    d = at_first_step()
    step_watch = d.run.watch
    out = submitted(d, inp.Sighting("completed", None, (), None, None))
    assert d.run.phase is Phase.COMPLETED
    # The watch of the waiting step would poll once more only to find the run finished.
    assert ended(out) == [step_watch] and not watches(out)


def test_a_run_finished_by_its_own_watch_ends_no_watch() -> None:
    d = at_first_step()
    out = d.observe("completed")  # the watch's own report: that watch is over already
    assert d.run.phase is Phase.COMPLETED and ended(out) == []


def test_a_stale_watch_report_that_finishes_the_run_ends_the_current_watch() -> None:
    d = at_first_step()
    submitted(d, None)  # the step's watch is stale; the working run's watch is current
    current = d.run.watch
    out = d.feed(inp.RunObserved("r1", current - 1, "completed", None, (), None, None, True))
    assert [type(e) for e in out.events] == [ev.InputIgnored] and ended(out) == []
    out = d.feed(inp.RunObserved("r1", current, "completed", None, (), None, None, True))
    assert d.run.phase is Phase.COMPLETED and ended(out) == []


def test_a_cancel_given_up_on_by_the_timer_ends_the_watch() -> None:
    d = at_first_step()
    d.feed(inp.CancelRun("r1", "t1", "user"))
    give_up = d.run.give_up_at_ms
    assert give_up is not None
    out = d.feed(inp.Tick("r1"), at=give_up)
    assert d.run.phase is Phase.FAILED and ended(out) == [d.run.watch]


def test_a_sighting_after_a_watch_saw_the_run_working_still_opens_the_next_step() -> None:
    d = at_first_step()
    d.observe("queued")  # the watch saw the submission land before its answer came back
    out = submitted(d, waiting("s2", 3))
    assert tools(out) == ["call_3"]
    # The watch then in flight (of the working run) is stale: its news came first this way.
    assert watches(out) == [("requires_action", "s2")]
    stale = d.feed(
        inp.RunObserved(
            "r1", d.run.watch - 1, "requires_action", "s2", (call(3),), None, None, True
        )
    )
    assert [type(e) for e in stale.events] == [ev.InputIgnored]


def test_a_working_state_is_no_news_and_the_run_is_watched() -> None:
    d = Driver()
    d.feed(start())
    out = created(d, inp.Sighting("in_progress", None, (), None, None))
    assert watches(out) == [("in_progress", None)] and not tools(out)


def test_a_submission_taken_without_a_sighting_closes_the_step_and_watches_the_work() -> None:
    d = at_first_step()
    out = submitted(d, None)
    changed = [e for e in out.events if isinstance(e, ev.RunStatusChanged)]
    assert [(e.status, e.closed_step) for e in changed] == [("queued", "s1")]
    # The watch of the waiting step is stale now; the next one watches the working run.
    assert watches(out) == [("queued", None)]
    assert d.run.phase is Phase.QUEUED and "s1" in d.run.closed_steps


def test_a_submission_that_found_the_run_moved_on_leaves_it_to_the_watch() -> None:
    d = at_first_step()
    step = d.run.step
    assert step is not None and step.submission_key is not None
    out = d.feed(
        inp.SubmissionResult("r1", step.submission_key, "s1", "run_moved_on", 1, "expired")
    )
    assert [type(e) for e in out.events] == [ev.StepSubmitted] and not out.intents


def test_a_run_being_cancelled_keeps_its_watch_when_its_outputs_are_taken() -> None:
    d = at_first_step()
    d.feed(inp.CancelRun("r1", "t1", "user"))
    out = submitted(d, None)
    assert [type(e) for e in out.events] == [ev.StepSubmitted] and not watches(out)

"""Example scenarios of the run domain, one behaviour each."""

from __future__ import annotations

import json

import pytest

from runcoord.domain import Phase, decide, fold
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from tests.unit.domain.helpers import Driver, call, start


def test_happy_path_two_steps_ends_completed_with_one_submission_per_step() -> None:
    d = Driver()
    first = d.feed(start())
    assert [type(i) for i in first.intents] == [it.CreateRunIntent]
    d.created()
    assert d.run.phase is Phase.QUEUED
    step1 = d.observe("requires_action", "step_1", (call(1), call(2)), expires=600_000)
    tools = [i for i in step1.intents if isinstance(i, it.ToolCallIntent)]
    assert [t.tool_call_id for t in tools] == ["call_1", "call_2"]
    assert d.run.phase is Phase.REQUIRES_ACTION
    assert not d.result("call_1").intents  # one of two: nothing to submit yet
    sub = d.result("call_2").intents
    assert [type(i) for i in sub] == [it.SubmitOutputsIntent]
    assert d.run.phase is Phase.SUBMITTING
    d.observe("queued")
    d.observe("requires_action", "step_2", (call(3),))
    d.result("call_3")
    d.observe("completed")
    assert d.run.phase is Phase.COMPLETED
    keys = [i.effect_key for x in d.decisions for i in x.intents]
    assert len(keys) == len(set(keys))
    assert [e.seq for e in d.journal] == list(range(1, len(d.journal) + 1))  # type: ignore[attr-defined]
    assert fold(d.journal) == d.state  # type: ignore[arg-type]


def test_a_submission_restates_the_turns_assistant_and_metadata() -> None:
    """A Responses follow-up names the turn's model and carries its metadata: the intent
    brings them, so the executor need not read the step's response for them."""
    d = Driver()
    d.feed(inp.StartRun("r1", "t1", "th1", "asst1", "responses", "hi", 0, {"team": "billing"}))
    d.created()
    d.observe("requires_action", "step_1", (call(1),))
    (submit,) = d.result("call_1").intents
    assert isinstance(submit, it.SubmitOutputsIntent)
    assert (submit.assistant_id, dict(submit.metadata)) == ("asst1", {"team": "billing"})
    assert fold(d.journal) == d.state  # type: ignore[arg-type]


def test_deadline_fills_missing_outputs_with_explicit_errors_and_submits() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("requires_action", "s1", (call(1), call(2, "create_ticket")), expires=600_000)
    d.result("call_1")
    deadline = d.run.step.deadline_ms  # type: ignore[union-attr]
    early = d.feed(inp.Tick("r1"), at=deadline - 1)
    assert not [e for e in early.events if isinstance(e, ev.ToolOutputRecorded)]
    out = d.feed(inp.Tick("r1"), at=deadline)
    submit = [i for i in out.intents if isinstance(i, it.SubmitOutputsIntent)]
    assert len(submit) == 1
    outputs = {o.tool_call_id: o for o in submit[0].outputs}
    assert outputs["call_1"].source == "tool"
    assert outputs["call_2"].is_error and outputs["call_2"].source == "deadline"
    assert "may have been performed" in json.loads(outputs["call_2"].output)["error"]["message"]
    # The late result is not lost: it goes to the dead letters with the reason.
    late = d.result("call_2")
    assert (late.dead_letter or "").startswith("late result: the step deadline passed")


def test_step_deadline_respects_expires_at_minus_margin() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("requires_action", "s1", (call(1),), expires=5_000)
    assert d.run.step.deadline_ms == 5_000 - d.policy.safety_margin_ms  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "tenant", "kind"),
    [("nope", "t1", "unknown_tool"), ("create_ticket", "t2", "not_enabled")],
)
def test_refused_tools_get_error_outputs_at_once(name: str, tenant: str, kind: str) -> None:
    d = Driver()
    d.feed(start(tenant=tenant))
    d.created()
    out = d.observe("requires_action", "s1", (call(1, name),))
    assert not [i for i in out.intents if isinstance(i, it.ToolCallIntent)]
    submit = [i for i in out.intents if isinstance(i, it.SubmitOutputsIntent)]
    assert json.loads(submit[0].outputs[0].output)["error"]["type"] == kind


def test_bad_tool_results_are_dead_lettered_with_reasons() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("requires_action", "s1", (call(1), call(2)))
    assert d.result("call_9").dead_letter == "unknown tool_call_id call_9 for step s1"
    assert d.result("call_1", step="s7").dead_letter == "unknown step s7 for run r1"
    assert "another tenant" in (d.result("call_1", tenant="t2").dead_letter or "")
    d.result("call_1", '{"a": 1}')
    dup = d.result("call_1", '{"a": 1}')
    assert dup.dead_letter is None and isinstance(dup.events[0], ev.InputIgnored)
    assert "conflicting" in (d.result("call_1", '{"a": 2}').dead_letter or "")
    orphan = inp.ToolResult("r404", "t1", "s1", "c", "{}", False, "tool", None)
    unknown = decide(None, orphan, now_ms=0, policy=d.policy)
    assert unknown.dead_letter == "unknown run r404" and unknown.state is None


def test_stale_watch_is_ignored_and_current_one_renewed_on_timeout() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    stale = d.run.watch
    d.observe("in_progress")
    out = d.feed(inp.RunObserved("r1", stale, "completed", None, (), None, None, True))
    assert isinstance(out.events[0], ev.InputIgnored) and d.run.phase is Phase.IN_PROGRESS
    renewed = d.feed(inp.RunObserved("r1", d.run.watch, "in_progress", None, (), None, None, False))
    assert isinstance(renewed.events[0], ev.WatchRenewed)
    assert [type(i) for i in renewed.intents] == [it.ObserveRunIntent]


def test_terminal_absorbs_everything() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("completed")
    for message in [
        inp.CancelRun("r1", "t1", "user"),
        inp.Tick("r1"),
        inp.RunObserved("r1", d.run.watch, "in_progress", None, (), None, None, True),
    ]:
        out = d.feed(message, at=10**9)
        assert not out.intents
        assert d.run.phase is Phase.COMPLETED


def test_run_budget_cancels_then_gives_up() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    out = d.feed(inp.Tick("r1"), at=d.run.run_deadline_ms)
    assert [type(i) for i in out.intents] == [it.CancelRunIntent, it.ObserveRunIntent]
    assert d.run.phase is Phase.CANCELLING
    d.feed(inp.Tick("r1"), at=d.run.give_up_at_ms)
    assert d.run.phase is Phase.FAILED and "gave up" in (d.run.outcome or "")


def test_cancel_before_creation_cancels_the_provider_run_once_it_exists() -> None:
    d = Driver()
    d.feed(start())
    d.feed(inp.CancelRun("r1", "t1", "user left"))
    out = d.created()
    assert [type(i) for i in out.intents] == [it.CancelRunIntent, it.ObserveRunIntent]
    assert d.run.phase is Phase.CANCELLING


def test_orphan_provider_run_is_cancelled_once() -> None:
    d = Driver()
    d.feed(start())
    d.feed(inp.EffectFailed("r1", d.run.create_key, "create_run", "provider 500s"))
    assert d.run.phase is Phase.FAILED
    first = d.created()
    again = d.created()
    assert [type(i) for i in first.intents] == [it.CancelRunIntent]
    assert not again.intents


def test_ambiguous_tool_call_ids_cancel_the_run_instead_of_guessing() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    out = d.observe("requires_action", "s1", (call(1), call(1)))
    assert d.run.phase is Phase.CANCELLING
    assert not [i for i in out.intents if isinstance(i, it.ToolCallIntent)]


def _submitting(d: Driver) -> str:
    """A run whose one-call step is complete and its submission out; the submission's key."""
    d.feed(start())
    d.created()
    d.observe("requires_action", "s1", (call(1),))
    d.result("call_1")
    key = d.run.step.submission_key  # type: ignore[union-attr]
    assert key is not None
    return key


def test_rejected_submission_requests_cancel_with_reason() -> None:
    d = Driver()
    key = _submitting(d)
    d.feed(inp.SubmissionResult("r1", key, "s1", "rejected", 3, "400 bad ids"))
    assert d.run.phase is Phase.CANCELLING
    assert "400 bad ids" in (d.run.cancel_reason or "")


def test_a_cancel_asked_for_while_a_submission_is_out_goes_to_its_follow_up() -> None:
    """Sent at once, the cancel would answer the step's calls beside the submission (two
    answers to one call), and stop the step's response rather than the follow-up."""
    d = Driver()
    key = _submitting(d)
    asked = d.feed(inp.CancelRun("r1", "t1", "user left"))
    assert d.run.phase is Phase.CANCELLING
    assert [type(i) for i in asked.intents] == [it.ObserveRunIntent]  # watched, not cancelled
    done = d.feed(inp.SubmissionResult("r1", key, "s1", "submitted", 1, None, "resp_2"))
    cancels = [i for i in done.intents if isinstance(i, it.CancelRunIntent)]
    assert [(c.provider_run_id, c.reason) for c in cancels] == [("resp_2", "user left")]


def test_a_held_cancel_goes_out_even_after_giving_up_on_the_run() -> None:
    d = Driver()
    key = _submitting(d)
    d.feed(inp.CancelRun("r1", "t1", "user left"))
    d.feed(inp.Tick("r1"), at=d.run.give_up_at_ms)  # the submission is still out
    assert d.run.terminal
    late = d.feed(inp.SubmissionResult("r1", key, "s1", "submitted", 1, None, "resp_2"))
    assert [(type(i), i.provider_run_id) for i in late.intents] == [(it.CancelRunIntent, "resp_2")]


def test_a_held_cancel_is_dropped_when_the_submission_saw_the_run_finish() -> None:
    d = Driver()
    key = _submitting(d)
    d.feed(inp.CancelRun("r1", "t1", "user left"))
    seen = inp.Sighting("completed", None, (), None, None)
    d.feed(inp.SubmissionResult("r1", key, "s1", "submitted", 1, None, "resp_2", seen=seen))
    assert d.run.phase is Phase.COMPLETED
    assert not [i for x in d.decisions for i in x.intents if isinstance(i, it.CancelRunIntent)]


def test_responses_follow_up_becomes_the_watched_run() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("requires_action", "resp_1", (call(1),))
    d.result("call_1")
    key = d.run.step.submission_key  # type: ignore[union-attr]
    assert key is not None
    out = d.feed(inp.SubmissionResult("r1", key, "resp_1", "submitted", 1, None, "resp_2"))
    assert d.run.provider_run_id == "resp_2"
    watches = [i for i in out.intents if isinstance(i, it.ObserveRunIntent)]
    assert [w.provider_run_id for w in watches] == ["resp_2"]
    # The follow-up took the outputs: the step is closed, and the watch is of a working run.
    assert (watches[0].since_status, watches[0].since_step) == ("queued", None)
    assert d.run.open_step is None and "resp_1" in d.run.closed_steps


def test_a_tool_call_the_executor_gave_up_on_is_answered_at_once_not_at_the_deadline() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    out = d.observe("requires_action", "s1", (call(1), call(2)))
    tool_keys = {
        i.tool_call_id: i.effect_key for i in out.intents if isinstance(i, it.ToolCallIntent)
    }
    d.result("call_2")
    failed = d.feed(inp.EffectFailed("r1", tool_keys["call_1"], "tool_call", "GatewayError: bad"))
    step = d.run.step
    assert step is not None
    output = step.output_for("call_1")
    assert output is not None and output.is_error and output.source == "executor"
    assert "GatewayError: bad" in output.output
    # The step is complete now: submitted with both outputs, long before its deadline.
    assert [type(i) for i in failed.intents] == [it.SubmitOutputsIntent]
    again = d.feed(inp.EffectFailed("r1", tool_keys["call_1"], "tool_call", "GatewayError: bad"))
    assert not again.intents  # a redelivered failure changes nothing


def test_a_tool_failure_for_no_call_of_the_open_step_is_ignored_with_its_reason() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("requires_action", "s1", (call(1),))
    out = d.feed(inp.EffectFailed("r1", "ek1_other", "tool_call", "boom"))
    assert not out.intents and d.run.step is not None and not d.run.step.outputs

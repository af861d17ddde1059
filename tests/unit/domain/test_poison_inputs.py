"""Poison inputs: well-formed inputs that make no sense for the run they name.

``decide`` must never raise on one (an exception would stop the coordinator's partition on
that record). Each is refused with a reason that becomes its dead letter, or journaled as
ignored with a reason, and a refused input leaves the run exactly as it was.
"""

from __future__ import annotations

import pytest

from runcoord.domain import Phase, decide
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from tests.unit.domain.helpers import POLICY, Driver, call, start


def refused(d: Driver, message: inp.Input, reason: str) -> None:
    """``message`` is dead-lettered with ``reason``, and the run is left as it was."""
    before = d.state
    out = d.feed(message)
    assert out.dead_letter is not None and reason in out.dead_letter, out
    assert (out.events, out.intents) == ((), ())
    assert d.state is before


@pytest.mark.parametrize(
    "status",
    ["requires_action", "queued", "in_progress", "cancelling", "completed", "failed", "gone"],
)
def test_an_observation_before_the_provider_run_exists_is_refused(status: str) -> None:
    # The poison record: a RunObserved for a run with no provider run yet tripped an
    # assert in decide, and the partition was stuck on it.
    d = Driver()
    d.feed(start())
    step = "step_1" if status == "requires_action" else None
    calls = (call(1),) if step else ()
    message = inp.RunObserved("r1", d.run.watch, status, step, calls, None, None, True)
    refused(d, message, "no provider run yet")
    # The run goes on as if it had never come.
    d.created()
    assert d.run.phase is Phase.QUEUED
    d.observe("requires_action", "step_1", (call(1),))
    d.result("call_1")
    d.observe("completed")
    assert d.run.phase is Phase.COMPLETED


def test_an_observation_naming_a_cancel_watch_before_the_provider_run_is_refused() -> None:
    # A cancel asked for before the provider run exists starts a watch (watch != 0), with
    # still nothing to observe.
    d = Driver()
    d.feed(start())
    d.feed(inp.CancelRun("r1", "t1", "user left"))
    assert d.run.watch != 0 and d.run.provider_run_id is None
    message = inp.RunObserved("r1", d.run.watch, "in_progress", None, (), None, None, True)
    refused(d, message, "no provider run yet")
    assert d.run.phase is Phase.CANCELLING


@pytest.mark.parametrize("status", ["gone", "", "REQUIRES_ACTION", "cancelled "])
def test_an_observation_with_an_unknown_status_is_refused(status: str) -> None:
    d = Driver()
    d.feed(start())
    d.created()
    message = inp.RunObserved("r1", d.run.watch, status, None, (), None, None, True)
    refused(d, message, f"unknown provider status {status!r}")
    assert d.run.phase is Phase.QUEUED


def test_an_unknown_status_is_refused_while_cancelling_too() -> None:
    d = Driver()
    d.feed(start())
    d.created()
    d.feed(inp.CancelRun("r1", "t1", "user"))
    message = inp.RunObserved("r1", d.run.watch, "gone", None, (), None, None, True)
    refused(d, message, "unknown provider status 'gone'")


def test_a_run_the_provider_is_cancelling_on_its_own_still_gets_a_give_up_time() -> None:
    # The provider reported `cancelling` (nobody here asked). When the run budget passes, our
    # own cancel must not be an illegal transition: it records the reason and the time we
    # stop waiting, and the run finishes then.
    d = Driver()
    d.feed(start())
    d.created()
    d.observe("cancelling")
    assert d.run.phase is Phase.CANCELLING and d.run.cancel_reason is None
    out = d.feed(inp.Tick("r1"), at=d.run.run_deadline_ms)
    assert [type(e) for e in out.events] == [ev.CancelRequested]
    assert [type(i) for i in out.intents] == [it.CancelRunIntent, it.ObserveRunIntent]
    assert d.run.phase is Phase.CANCELLING and d.run.give_up_at_ms is not None
    d.feed(inp.Tick("r1"), at=d.run.give_up_at_ms)
    assert d.run.phase is Phase.FAILED and "gave up" in (d.run.outcome or "")


def test_an_input_for_another_run_is_refused_not_raised() -> None:
    d = Driver()
    d.feed(start())
    before = d.state
    out = decide(before, inp.CancelRun("r2", "t1", "x"), now_ms=0, policy=POLICY)  # a caller's slip
    assert out.dead_letter == "input for run r2 decided against run r1"
    assert out.state is before and (out.events, out.intents) == ((), ())

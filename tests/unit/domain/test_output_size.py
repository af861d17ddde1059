"""Outputs too large to submit are refused with an explicit error output, not held or dropped."""

from __future__ import annotations

import dataclasses
import json

from runcoord.domain import events as ev
from tests.unit.domain.helpers import POLICY, Driver, call, start

SMALL = dataclasses.replace(POLICY, max_output_bytes=1_000, max_step_output_bytes=1_500)


def step_of(n: int) -> Driver:
    d = Driver(SMALL)
    d.feed(start())
    d.created()
    d.observe("requires_action", "step_1", tuple(call(i) for i in range(n)))
    return d


def recorded(d: Driver, call_id: str) -> ev.ToolOutputRecorded:
    return next(
        e
        for e in d.journal
        if isinstance(e, ev.ToolOutputRecorded) and e.output.tool_call_id == call_id
    )


def test_an_output_over_the_limit_becomes_an_error_output_and_a_dead_letter() -> None:
    d = step_of(1)
    decision = d.result("call_0", "x" * 1_001)
    assert decision.dead_letter == "tool output is 1001 bytes; the limit is 1000"
    out = recorded(d, "call_0").output
    assert (out.is_error, out.source) == (True, "intake")
    assert json.loads(out.output)["error"]["type"] == "output_too_large"
    assert d.run.step is not None and d.run.step.submission_key is not None, "still submitted"


def test_outputs_that_together_exceed_one_submission_are_refused_one_by_one() -> None:
    d = step_of(3)
    assert d.result("call_0", "a" * 900).dead_letter is None
    refused = d.result("call_1", "b" * 900)
    assert refused.dead_letter is not None and "makes 1800" in refused.dead_letter
    assert d.result("call_2", "c" * 100).dead_letter is None, "what still fits is kept"
    assert recorded(d, "call_2").output.output == "c" * 100
    assert d.run.step is not None and d.run.step.submission_key is not None

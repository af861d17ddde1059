"""Any well-formed input, in any order, to a run in any phase: ``decide`` never raises.

Hypothesis draws a sequence of inputs of every type. Some are the input the run would get
next in a healthy life (so runs reach every phase); the others are of any type, each field
drawn either from what the run's state makes plausible (its create key, current watch,
steps, call ids, submission key) or from anything of the field's type (arbitrary text, any
64-bit integer, unknown statuses, another tenant, another run). After every input: the
decision was made without an exception; a refused input carries its reason and leaves the
run as it was; nothing is silently dropped; the journal folds to the state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runcoord.domain import Phase, RunState, ToolCall, decide, fold
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain.decide import OBSERVABLE_STATUSES
from tests.unit.domain.helpers import POLICY

# Built once: strategies made per draw would cost most of the test's time.
LONG = st.integers(-(2**63), 2**63 - 1)  # what an Avro long may carry
TEXT = st.text(max_size=12)
INDEX = st.integers(0, 2**16)
CHANCE = st.integers(0, 99)
STATUS = st.sampled_from(sorted(OBSERVABLE_STATUSES))
# A healthy run is mostly asked for tool outputs, and ends once.
HEALTHY_STATUS = st.sampled_from(
    ["requires_action"] * 6 + ["queued", "in_progress"] * 2 + sorted(OBSERVABLE_STATUSES)
)
ODD_STATUS = st.sampled_from(["", "gone", "REQUIRES_ACTION", "completed "]) | TEXT
OUTPUT = st.sampled_from(['{"ok": true}', '{"ok": false}', "", "x" * 600_000]) | st.text()
OUTCOMES = ["submitted", "already_submitted", "run_moved_on", "rejected"]
OUTCOME = st.sampled_from(OUTCOMES)
EFFECT_KIND = st.sampled_from(
    ["create_run", "observe_run", "tool_call", "submit_outputs", "cancel_run"]
)
CALL = st.builds(
    ToolCall,
    id=st.sampled_from(["call_0", "call_1", "call_2"]) | TEXT,
    name=st.sampled_from([*POLICY.tools, "nope"]) | TEXT,
    arguments=st.sampled_from(["{}", '{"q": 1}']) | TEXT,
)
GOOD_CALLS = st.lists(st.sampled_from(sorted(POLICY.tools)), max_size=3).map(
    lambda names: tuple(ToolCall(f"call_{i}", name, "{}") for i, name in enumerate(names))
)
CALLS = st.lists(CALL, max_size=4).map(tuple) | GOOD_CALLS
KINDS = st.sampled_from(
    ["next"] * 6
    + ["StartRun", "CancelRun", "RunCreated", "RunObserved", "ToolResult"]
    + ["SubmissionResult", "EffectFailed", "Tick"]
)
ELAPSED = st.sampled_from([0, 1, 1_000]) | st.integers(0, 700_000)


class Draw:
    """Draws the fields of one input, for the run in ``state``, at ``now``."""

    def __init__(self, data: st.DataObject, state: RunState | None, now: int) -> None:
        self.data, self.state, self.now = data, state, now

    def __call__(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def chance(self, percent: int) -> bool:
        return bool(self(CHANCE) < percent)

    def pick(self, plausible: list[Any], anything: st.SearchStrategy[Any]) -> Any:
        """Mostly a value the run would recognise, sometimes anything of the field's type."""
        if plausible and self.chance(75):
            return plausible[self(INDEX) % len(plausible)]
        return self(anything)

    def maybe(self, value: Any) -> Any:
        return None if self.chance(20) else value

    # -- fields ---------------------------------------------------------------------------

    def run_id(self) -> str:
        return str(self.pick(["r1"], st.sampled_from(["r2", ""]) | TEXT))

    def tenant(self) -> str:
        return str(self.pick([self.state.tenant] if self.state else ["t1"], TEXT))

    def step_id(self) -> str:
        s = self.state
        known = [] if s is None else [*([s.step.step_id] if s.step else []), *s.closed_steps]
        return str(self.pick(known, st.sampled_from(["step_1", "step_2"]) | TEXT))

    def call_id(self) -> str:
        s = self.state
        known = [c.id for c in s.step.calls] if s is not None and s.step else []
        return str(self.pick(known, st.sampled_from(["call_0", "call_9"]) | TEXT))

    def key(self) -> str:
        s = self.state
        known = [] if s is None else [s.create_key]
        if s is not None and s.step is not None and s.step.submission_key is not None:
            known.append(s.step.submission_key)
        return str(self.pick(known, st.sampled_from(["ek1_bogus", ""]) | TEXT))

    def watch(self) -> int:
        s = self.state
        return int(self.pick([s.watch, s.watch + 1] if s else [0], LONG))

    def status(self) -> str:
        return str(self(STATUS) if self.chance(80) else self(ODD_STATUS))

    def expires(self) -> int | None:
        return self.maybe(self.pick([self.now + 600_000, self.now + 500], LONG))

    def text(self) -> str:
        return str(self(TEXT))

    # -- inputs ---------------------------------------------------------------------------

    def any_input(self) -> inp.Input:
        match self(KINDS):
            case "next":
                return self.next_input()
            case "StartRun":
                return inp.StartRun(
                    self.run_id(),
                    self.tenant(),
                    self.text(),
                    self.text(),
                    self.pick(["assistants", "responses"], TEXT),
                    self.text(),
                    self(LONG),
                    self(st.dictionaries(TEXT, TEXT, max_size=2)),
                )
            case "CancelRun":
                return inp.CancelRun(self.run_id(), self.tenant(), self.text())
            case "RunCreated":
                return inp.RunCreated(
                    self.run_id(),
                    self.key(),
                    self.pick(["prov_1", "prov_2"], TEXT),
                    self.status(),
                    self.expires(),
                    self(st.booleans()),
                )
            case "RunObserved":
                return inp.RunObserved(
                    self.run_id(),
                    self.watch(),
                    self.status(),
                    self.maybe(self.step_id()),
                    self(CALLS),
                    self.expires(),
                    self.maybe(self.text()),
                    self(st.booleans()),
                )
            case "ToolResult":
                return inp.ToolResult(
                    self.run_id(),
                    self.tenant(),
                    self.step_id(),
                    self.call_id(),
                    self(OUTPUT),
                    self(st.booleans()),
                    self.pick(["tool", "intake"], TEXT),
                    self.maybe(self.key()),
                )
            case "SubmissionResult":
                return inp.SubmissionResult(
                    self.run_id(),
                    self.key(),
                    self.step_id(),
                    self.pick(OUTCOMES, TEXT),
                    self(LONG),
                    self.maybe(self.text()),
                    self.maybe(self.pick(["resp_2"], TEXT)),
                )
            case "EffectFailed":
                return inp.EffectFailed(self.run_id(), self.key(), self(EFFECT_KIND), self.text())
            case _:
                return inp.Tick(self.run_id())

    def next_input(self) -> inp.Input:
        """What a healthy run would be told next: this is how runs get deep into their lives."""
        s = self.state
        if s is None:
            return inp.StartRun("r1", "t1", "th1", "asst1", "assistants", "hi", 0)
        step = s.open_step
        if s.provider_run_id is None:
            status = self(HEALTHY_STATUS)
            return inp.RunCreated("r1", s.create_key, "prov_1", status, self.expires(), False)
        if step is not None and step.missing and step.submission_key is None:
            call = step.missing[self(INDEX) % len(step.missing)]
            return inp.ToolResult(
                "r1", s.tenant, step.step_id, call.id, self(OUTPUT), False, "tool", None
            )
        if step is not None and step.submission_key is not None and step.submitted is None:
            return inp.SubmissionResult(
                "r1", step.submission_key, step.step_id, self(OUTCOME), 1, None
            )
        status = self(HEALTHY_STATUS)
        new_step = f"step_{len(s.closed_steps) + 2}" if status == "requires_action" else None
        return inp.RunObserved(
            "r1", s.watch, status, new_step, self(CALLS), self.expires(), None, True
        )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), started=st.booleans())
def test_decide_never_raises_and_every_refusal_has_a_reason(
    data: st.DataObject, started: bool
) -> None:
    state: RunState | None = None
    now = 0
    journal: list[ev.JournalEvent] = []
    if started:  # most runs begin with their own StartRun; some inputs name no run at all
        first = decide(None, Draw(data, None, 0).next_input(), now_ms=now, policy=POLICY)
        state = first.state
        journal.extend(first.events)
    for _ in range(data.draw(st.integers(1, 40), label="inputs")):
        now += data.draw(ELAPSED, label="ms")
        message = Draw(data, state, now).any_input()
        # The loop decides an input against the state of the run it names, so does this.
        current = state if state is None or state.run_id == message.run_id else None
        decision = decide(current, message, now_ms=now, policy=POLICY)

        # A refusal always says why; so does every input the journal records as ignored.
        if decision.dead_letter is not None:
            assert decision.dead_letter.strip(), decision
        for event in decision.events:
            if isinstance(event, ev.InputIgnored):
                assert event.reason.strip(), event
        # Nothing is silently lost: an input (a timer aside) is journaled or dead-lettered.
        if not isinstance(message, inp.Tick):
            assert decision.events or decision.dead_letter is not None, (message, current)
        # An input refused outright leaves the run exactly as it was.
        if not decision.events:
            assert decision.state is current and not decision.intents, decision
        if current is not state:
            continue  # another run's input: not part of this run's life
        state = decision.state
        journal.extend(decision.events)
        assert [e.seq for e in journal] == list(range(1, len(journal) + 1))
        assert fold(journal) == state


def test_the_inputs_drawn_reach_every_phase() -> None:
    """The property above is only as good as the states it visits: it must visit them all."""
    seen: set[Phase] = set()

    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def walk(data: st.DataObject) -> None:
        state: RunState | None = None
        now = 0
        for _ in range(40):
            now += data.draw(ELAPSED)
            message = Draw(data, state, now).any_input()
            if state is not None and message.run_id != state.run_id:
                continue
            state = decide(state, message, now_ms=now, policy=POLICY).state
            if state is not None:
                seen.add(state.phase)

    walk()
    assert seen == set(Phase), sorted(set(Phase) - seen)

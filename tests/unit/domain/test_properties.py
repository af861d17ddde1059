"""Property tests: random interleavings, duplicates and reorderings against the run domain.

A small provider model answers the intents the core emits; hypothesis chooses which intent
is answered when (any intent ever emitted may be delivered again, late, or out of order),
how time moves, and when garbage arrives. After every step the invariants of G2/G3/G4 hold.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from runcoord.domain import Phase, fold
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.evolve import TERMINAL_STATUSES
from runcoord.domain.model import ToolCall
from tests.unit.domain.helpers import POLICY, Driver

# Events only an applied provider state makes.
_OBSERVED = (ev.StepOpened, ev.RunStatusChanged, ev.RunFinished)
OUTPUTS = st.sampled_from(['{"ok": true}', '{"ok": false}', "plain text"])


class Provider:
    """What the provider believes: one run, a script of steps, the submissions it accepted."""

    def __init__(self, script: list[list[str]]) -> None:
        self.script = script
        self.step = -1
        self.accepted: dict[str, int] = {}
        self._status: str | None = None
        self.version = 0  # grows on every change the provider makes

    @property
    def status(self) -> str | None:
        return self._status

    @status.setter
    def status(self, value: str | None) -> None:
        self._status = value
        self.version += 1

    @property
    def step_id(self) -> str | None:
        return f"step_{self.step}" if self.status == "requires_action" else None

    def calls(self) -> tuple[ToolCall, ...]:
        if self.status != "requires_action":
            return ()
        names = self.script[self.step]
        return tuple(ToolCall(f"call_{self.step}_{i}", n, "{}") for i, n in enumerate(names))

    def progress(self) -> None:
        if self.status == "queued":
            self.status = "in_progress"
        elif self.status == "in_progress":
            if self.step + 1 < len(self.script):
                self.step += 1
                self.status = "requires_action"
            else:
                self.status = "completed"
        elif self.status == "cancelling":
            self.status = "cancelled"

    def submit(self, step_id: str, ids: set[str]) -> str:
        if self.status in TERMINAL_STATUSES or self.status == "cancelling":
            return "run_moved_on"
        if self.step_id != step_id:
            return "already_submitted" if step_id in self.accepted else "run_moved_on"
        assert ids == {c.id for c in self.calls()}, "submission must answer every call"
        self.accepted[step_id] = self.accepted.get(step_id, 0) + 1
        self.status = "queued"
        return "submitted"


class RunWorld(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver(POLICY)
        self.provider = Provider([])
        self.sent: list[it.EffectIntent] = []
        self.finished_as: Phase | None = None
        # Inputs that carry a provider state (observations, followed submissions), with the
        # provider's version when it was seen; any of them may be delivered late.
        self.polled: list[tuple[int, inp.RunObserved | inp.SubmissionResult]] = []
        self.applied_version = 0
        self.last_was_tick = False
        self.ended: set[int] = set()  # watches the executor was told to end

    def feed(self, message: inp.Input, at: int | None = None) -> None:
        before = self.d.state
        decision = self.d.feed(message, at=at)
        self.sent.extend(decision.intents)
        self.last_was_tick = isinstance(message, inp.Tick)
        if before is not None and before.terminal:
            # Terminal absorbs: the only effect a finished run may still ask for is the
            # cancellation of an orphan provider run created after it finished.
            assert all(isinstance(i, it.CancelRunIntent) for i in decision.intents)
        for end in decision.intents:
            if isinstance(end, it.EndWatchIntent):
                # Only the decision that finishes a run unwatches it, and only its current
                # watch: a run that works on is never left without one.
                assert before is not None and not before.terminal and self.d.run.terminal
                assert end.watch == self.d.run.watch
                self.ended.add(end.watch)

    def of(self, kind: type[Any]) -> list[Any]:
        return [i for i in self.sent if isinstance(i, kind)]

    def pick(self, data: st.DataObject, kind: type[Any]) -> Any:
        """Mostly the newest intent of a kind, sometimes an older one (a late redelivery)."""
        intents = self.of(kind)
        back = data.draw(st.integers(0, len(intents) - 1) | st.just(0))
        return intents[-1 - back]

    @initialize(
        script=st.lists(
            st.lists(st.sampled_from(["lookup", "create_ticket", "nope"]), min_size=0, max_size=4),
            max_size=3,
        ),
        tenant=st.sampled_from(["t1", "t2"]),
    )
    def start(self, script: list[list[str]], tenant: str) -> None:
        self.provider = Provider(script)
        self.feed(inp.StartRun("r1", tenant, "th1", "asst1", "assistants", "hi", 0))

    @rule()
    def duplicate_start(self) -> None:
        r = self.d.run
        self.feed(inp.StartRun("r1", r.tenant, "th1", "asst1", "assistants", "hi", 0))

    @precondition(lambda self: bool(self.of(it.CreateRunIntent)))
    @rule(follows=st.booleans())
    def deliver_create(self, follows: bool) -> None:
        """The create's answer; a streamed create (``follows``) also carries where the run
        was when the model stopped working."""
        intent = self.of(it.CreateRunIntent)[0]
        if self.provider.status is None:
            self.provider.status = "queued"
        seen = self.follow() if follows else None
        status = seen.status if seen is not None else "queued"
        self.observe_applied(
            self.provider.version,
            inp.RunCreated("r1", intent.effect_key, "prov_1", status, None, False, seen=seen),
        )

    def follow(self) -> inp.Sighting | None:
        """A write following the run's stream: the provider works on until it waits or ends,
        and the write reports that state (None when the run is not working)."""
        p = self.provider
        if p.status not in ("queued", "in_progress"):
            return None
        while p.status in ("queued", "in_progress"):
            p.progress()
        return inp.Sighting(p.status or "", p.step_id, p.calls(), None, None)

    def observe_applied(self, version: int, message: inp.Input) -> None:
        """Feed an input that carries a provider state, checking that applying it never
        takes the run back in the provider's history."""
        self.feed(message)
        decision = self.d.decisions[-1]
        events = decision.events
        if any(isinstance(e, _OBSERVED) for e in events) or (
            isinstance(message, inp.RunObserved)
            and events
            and not isinstance(events[0], ev.InputIgnored)
        ):
            assert version >= self.applied_version, "a stale observation was applied"
            self.applied_version = version

    @rule()
    def provider_progress(self) -> None:
        self.provider.progress()

    @precondition(lambda self: self.d.now > 60_000)
    @rule()
    def provider_expires(self) -> None:
        if self.provider.status == "requires_action":
            self.provider.status = "expired"

    @precondition(lambda self: bool(self.of(it.ObserveRunIntent)))
    @rule(data=st.data(), timed_out=st.booleans())
    def executor_polls(self, data: st.DataObject, timed_out: bool) -> None:
        """An executor's poll: a snapshot of the provider, delivered now or much later."""
        watch: it.ObserveRunIntent = self.pick(data, it.ObserveRunIntent)
        p = self.provider
        if p.status is None or watch.watch in self.ended:
            return  # an ended watch polls no more
        changed = (p.status, p.step_id) != (watch.since_status, watch.since_step)
        if not changed and not timed_out:
            return  # the executor is still polling
        obs = inp.RunObserved(
            "r1", watch.watch, p.status, p.step_id, p.calls(), None, None, changed
        )
        self.polled.append((p.version, obs))

    @precondition(lambda self: bool(self.polled))
    @rule(data=st.data())
    def deliver_observation(self, data: st.DataObject) -> None:
        back = data.draw(st.integers(0, len(self.polled) - 1) | st.just(0))
        version, obs = self.polled[-1 - back]
        self.observe_applied(version, obs)

    @precondition(lambda self: bool(self.of(it.ToolCallIntent)))
    @rule(data=st.data(), output=OUTPUTS)
    def deliver_tool_result(self, data: st.DataObject, output: str) -> None:
        call: it.ToolCallIntent = self.pick(data, it.ToolCallIntent)
        self.feed(
            inp.ToolResult(
                "r1",
                call.tenant,
                call.step_id,
                call.tool_call_id,
                output,
                False,
                "tool",
                call.effect_key,
            )
        )

    @precondition(lambda self: bool(self.of(it.SubmitOutputsIntent)))
    @rule(data=st.data(), follows=st.booleans())
    def deliver_submission(self, data: st.DataObject, follows: bool) -> None:
        sub: it.SubmitOutputsIntent = self.pick(data, it.SubmitOutputsIntent)
        outcome = self.provider.submit(sub.step_id, {o.tool_call_id for o in sub.outputs})
        seen = self.follow() if follows and outcome == "submitted" else None
        result = inp.SubmissionResult(
            "r1", sub.effect_key, sub.step_id, outcome, 1, None, seen=seen
        )
        if seen is None:
            self.feed(result)
        else:  # delivered now or much later, as an observation is
            self.polled.append((self.provider.version, result))

    @precondition(lambda self: bool(self.of(it.CancelRunIntent)))
    @rule()
    def deliver_cancel(self) -> None:
        if self.provider.status not in TERMINAL_STATUSES and self.provider.status is not None:
            self.provider.status = "cancelling"

    @precondition(lambda self: self.d.now > 90_000)
    @rule()
    def user_cancels(self) -> None:
        self.feed(inp.CancelRun("r1", self.d.run.tenant, "user"))

    @precondition(
        lambda self: (
            self.d.state is not None
            and self.d.run.step is not None
            and self.d.run.step.submission_out
        )
    )
    @rule()
    def user_cancels_while_a_submission_is_out(self) -> None:
        self.feed(inp.CancelRun("r1", self.d.run.tenant, "user"))

    @rule(ms=st.integers(0, 1_000) | st.integers(0, 30_000))
    def time_passes(self, ms: int) -> None:
        self.feed(inp.Tick("r1"), at=self.d.now + ms)

    @rule(data=st.data())
    def garbage(self, data: st.DataObject) -> None:
        r = self.d.run
        step = r.step.step_id if r.step else "step_0"
        bad = data.draw(
            st.sampled_from(
                [
                    inp.ToolResult("r1", r.tenant, step, "call_bogus", "x", False, "tool", None),
                    inp.ToolResult("r1", "intruder", step, "call_0_0", "x", False, "tool", None),
                    inp.ToolResult(
                        "r1", r.tenant, "step_bogus", "call_0_0", "x", False, "tool", None
                    ),
                    inp.SubmissionResult("r1", "ek1_bogus", step, "submitted", 1, None),
                    inp.RunCreated("r1", "ek1_bogus", "prov_x", "queued", None, False),
                ]
            )
        )
        self.feed(bad)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def journal_is_gap_free_and_folds_to_the_state(self) -> None:
        journal = self.d.journal
        assert [e.seq for e in journal] == list(range(1, len(journal) + 1))  # type: ignore[attr-defined]
        assert fold(journal) == self.d.state  # type: ignore[arg-type]

    @invariant()
    def no_effect_key_is_emitted_twice(self) -> None:
        keys = [i.effect_key for i in self.sent]
        assert len(keys) == len(set(keys))

    @invariant()
    def terminal_is_absorbing(self) -> None:
        if self.d.state is None:
            return
        if self.finished_as is not None:
            assert self.d.run.phase is self.finished_as
        elif self.d.run.terminal:
            self.finished_as = self.d.run.phase

    @invariant()
    def a_run_that_is_not_finished_keeps_its_watch(self) -> None:
        r = self.d.state
        if r is not None and not r.terminal and r.provider_run_id is not None:
            assert r.watch not in self.ended

    @invariant()
    def the_provider_accepts_at_most_one_submission_per_step(self) -> None:
        assert all(n == 1 for n in self.provider.accepted.values())

    @invariant()
    def each_tool_call_is_dispatched_at_most_once(self) -> None:
        calls = [(c.step_id, c.tool_call_id) for c in self.of(it.ToolCallIntent)]
        assert len(calls) == len(set(calls))

    @invariant()
    def no_open_step_outlives_its_deadline(self) -> None:
        # G2: once time has been checked past a step's deadline, the step has its submission.
        r = self.d.state
        if r is None or not self.last_was_tick or r.phase is not Phase.REQUIRES_ACTION:
            return
        step = r.open_step
        assert step is None or self.d.now < step.deadline_ms or step.submission_key

    @invariant()
    def a_cancel_waits_for_the_submission_out_and_then_goes(self) -> None:
        # While a submission is out nothing else answers its step: a cancel asked for then is
        # held (sent, it would close the step's calls beside the submission), and sent once
        # the submission's outcome is known.
        r = self.d.state
        if r is None or r.cancel_reason is None or r.provider_run_id is None:
            return
        out = r.step is not None and r.step.submission_out
        cancels = self.of(it.CancelRunIntent)
        if out:
            assert not cancels
        elif not r.terminal:
            assert len(cancels) == 1

    @invariant()
    def every_submission_answers_every_call_of_its_step(self) -> None:
        for sub in self.of(it.SubmitOutputsIntent):
            opened = next(
                e
                for e in self.d.journal
                if isinstance(e, ev.StepOpened) and e.step_id == sub.step_id
            )
            assert {o.tool_call_id for o in sub.outputs} == {c.id for c in opened.calls}


RunWorld.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRunWorld = RunWorld.TestCase

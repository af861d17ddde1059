"""The watch loop and its backoff, on a fake clock: no time passes for real (the hedge's
tests wait 10 ms for real: it is a wait on the event loop's clock)."""

from __future__ import annotations

import asyncio

import pytest

from runcoord.hedging import hedged
from runcoord.provider.errors import ProviderRejected, ProviderUnavailable
from runcoord.provider.polling import Backoff, BackoffPolicy, Pace, changed, watch
from runcoord.provider.port import ProviderRun
from tests.fake_time import FakeTime

pytestmark = pytest.mark.anyio


def run(status: str, step: str | None = None, hint: int | None = None) -> ProviderRun:
    return ProviderRun("run_1", status, step, (), None, None, hint)


@pytest.mark.parametrize(
    ("policy", "hints", "delays"),
    [
        (BackoffPolicy(), [None] * 10, [100, 150, 225, 338, 506, 759, 1139, 1709, 2000, 2000]),
        (BackoffPolicy(10, 2.0, 50), [None] * 5, [10, 20, 40, 50, 50]),
        # The provider's openai-poll-after-ms is a floor, never a ceiling.
        (BackoffPolicy(), [200, 200, 200, 200, None], [200, 200, 225, 338, 506]),
        (BackoffPolicy(), [0, 5000], [100, 5000]),
    ],
)
def test_backoff_schedule(
    policy: BackoffPolicy, hints: list[int | None], delays: list[int]
) -> None:
    backoff = Backoff(policy)
    assert [backoff.next_ms(hint) for hint in hints] == delays


@pytest.mark.parametrize(
    ("seen", "since", "expected"),
    [
        (run("queued"), ("queued", None), False),
        # The model is working either way: nothing for the coordinator to decide.
        (run("in_progress"), ("queued", None), False),
        (run("queued"), ("in_progress", None), False),
        (run("completed"), ("in_progress", None), True),
        # Our submission was taken: the step is over.
        (run("queued"), ("requires_action", "s1"), True),
        (run("requires_action", "s1"), ("requires_action", "s1"), False),
        # A new step with the same status is a change: the next step needs outputs too.
        (run("requires_action", "s2"), ("requires_action", "s1"), True),
        (run("requires_action", "s1"), ("in_progress", None), True),
    ],
)
def test_changed(seen: ProviderRun, since: tuple[str, str | None], expected: bool) -> None:
    assert changed(seen, *since) is expected


class Script:
    """Answers one retrieve after another from a list; an exception in it is raised."""

    def __init__(self, *answers: ProviderRun | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> ProviderRun:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


POLICY = BackoffPolicy(100, 2.0, 400)


async def watch_with(
    retrieve: Script, time: FakeTime, since_status: str, timeout_ms: int
) -> tuple[ProviderRun, bool]:
    """The watch under test, from ``since_status`` with no step, on the fake clock."""
    return await watch(
        retrieve,
        since_status=since_status,
        since_step=None,
        timeout_ms=timeout_ms,
        policy=POLICY,
        clock=time.clock,
        sleep=time.sleep,
    )


async def test_returns_at_once_when_already_changed() -> None:
    time = FakeTime()
    retrieve = Script(run("requires_action", "s1"))
    result = await watch_with(retrieve, time, "queued", 1000)
    assert result == (run("requires_action", "s1"), True)
    assert (retrieve.calls, time.slept) == (1, [])


async def test_backs_off_until_the_change() -> None:
    time = FakeTime()
    retrieve = Script(run("queued"), run("queued"), run("queued", hint=300), run("completed"))
    seen, moved = await watch_with(retrieve, time, "queued", 10_000)
    assert (seen.status, moved) == ("completed", True)
    assert time.slept == [0.1, 0.2, 0.4]


async def test_times_out_with_the_last_run_seen() -> None:
    time = FakeTime()
    retrieve = Script(run("in_progress"))
    seen, moved = await watch_with(retrieve, time, "in_progress", 1000)
    assert (seen, moved) == (run("in_progress"), False)
    # Never sleeps past the deadline; polls once more at it.
    assert time.slept == [0.1, 0.2, 0.4, 0.3] and retrieve.calls == 5


async def test_polls_through_a_retriable_error() -> None:
    time = FakeTime()
    retrieve = Script(run("queued"), ProviderUnavailable("503"), run("completed"))
    seen, moved = await watch_with(retrieve, time, "queued", 1000)
    assert (seen.status, moved) == ("completed", True)


async def test_the_model_starting_to_work_is_no_change() -> None:
    """queued -> in_progress ends no watch; the watch times out reporting in_progress."""
    time = FakeTime()
    retrieve = Script(run("queued"), run("in_progress"))
    seen, moved = await watch_with(retrieve, time, "queued", 1000)
    assert (seen.status, moved) == ("in_progress", False)


async def test_an_error_on_every_poll_is_raised_at_the_deadline() -> None:
    time = FakeTime()
    with pytest.raises(ProviderUnavailable):
        await watch(
            Script(ProviderUnavailable("down")),
            since_status="queued",
            since_step=None,
            timeout_ms=500,
            policy=POLICY,
            clock=time.clock,
            sleep=time.sleep,
        )
    assert sum(time.slept) == pytest.approx(0.5)


async def test_a_fatal_error_is_raised_at_once() -> None:
    time = FakeTime()
    with pytest.raises(ProviderRejected):
        await watch(
            Script(ProviderRejected("gone", status_code=404)),
            since_status="queued",
            since_step=None,
            timeout_ms=500,
            policy=POLICY,
            clock=time.clock,
            sleep=time.sleep,
        )
    assert time.slept == []


# --------------------------------------------------------------------------- hedging


class Stuck:
    """Retrieves whose first call hangs until released (a provider latency spike); the
    later ones answer ``answer`` at once, or raise it."""

    def __init__(self, answer: ProviderRun | Exception) -> None:
        self.answer = answer
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def __call__(self) -> ProviderRun:
        self.calls += 1
        if self.calls == 1:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return run("in_progress")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_slow_poll_is_sent_again_beside_it_and_the_first_answer_wins() -> None:
    retrieve = Stuck(run("requires_action", "s1"))
    # A real wait, 10 ms: without the hedge the watch would hang on the first call for ever.
    got = await asyncio.wait_for(hedged(retrieve, 10), timeout=30)
    assert got == run("requires_action", "s1")
    assert (retrieve.calls, retrieve.cancelled) == (2, 1)  # the slow one is given up


async def test_while_nothing_answers_one_more_is_sent_each_interval_up_to_three() -> None:
    class TwoStuck:
        def __init__(self) -> None:
            self.calls = self.cancelled = 0
            self.forever = asyncio.Event()

        async def __call__(self) -> ProviderRun:
            self.calls += 1
            if self.calls <= 2:  # both held by a spike
                try:
                    await self.forever.wait()
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            return run("requires_action", "s1")

    retrieve = TwoStuck()
    got = await asyncio.wait_for(hedged(retrieve, 10), timeout=30)
    assert got == run("requires_action", "s1")
    assert (retrieve.calls, retrieve.cancelled) == (3, 2)


async def test_no_more_than_three_are_in_flight() -> None:
    calls = 0
    release = asyncio.Event()

    async def stuck() -> ProviderRun:
        nonlocal calls
        calls += 1
        await release.wait()
        return run("queued")

    task = asyncio.ensure_future(hedged(stuck, 1))
    while calls < 3:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)  # fifty intervals more
    assert calls == 3
    release.set()
    assert await asyncio.wait_for(task, timeout=30) == run("queued")


async def test_an_answer_within_the_hedge_sends_nothing_more() -> None:
    retrieve = Script(run("queued"))
    assert await hedged(retrieve, 10_000) == run("queued")
    assert retrieve.calls == 1


async def test_the_hedge_failing_waits_for_the_slow_one() -> None:
    retrieve = Stuck(ProviderUnavailable("503"))
    task = asyncio.ensure_future(hedged(retrieve, 10))
    while retrieve.calls < 2:  # the hedge was sent (and failed); the first still hangs
        await asyncio.sleep(0.001)
    assert not task.done()
    retrieve.release.set()
    assert await asyncio.wait_for(task, timeout=30) == run("in_progress")


async def test_an_error_is_raised_only_when_no_poll_answered() -> None:
    class BothFail(Stuck):
        async def __call__(self) -> ProviderRun:
            self.calls += 1
            if self.calls == 1:
                await self.release.wait()
                raise ProviderUnavailable("first")
            self.release.set()
            raise ProviderUnavailable("second")

    retrieve = BothFail(run("queued"))
    with pytest.raises(ProviderUnavailable):
        await asyncio.wait_for(hedged(retrieve, 10), timeout=30)
    assert retrieve.calls == 2


# ---- the pace of a watch's first poll ------------------------------------------------------


def test_a_pace_polls_at_once_until_enough_watches_are_on_record() -> None:
    pace = Pace(least=4)
    for waited in (300, 310, 320):
        pace.record(waited)
    assert pace.first_poll_ms() == 0
    pace.record(330)
    assert pace.first_poll_ms() == 300  # the low quantile of what the watches waited


def test_a_pace_never_waits_past_its_cap() -> None:
    pace = Pace(least=1, cap_ms=500)
    pace.record(10_000)
    assert pace.first_poll_ms() == 500


async def paced_watch(
    retrieve: Script, time: FakeTime, pace: Pace, since_status: str, since_step: str | None
) -> tuple[ProviderRun, bool]:
    return await watch(
        retrieve,
        since_status=since_status,
        since_step=since_step,
        timeout_ms=10_000,
        policy=POLICY,
        clock=time.clock,
        sleep=time.sleep,
        pace=pace,
    )


async def test_a_paced_watch_sends_its_first_poll_late_and_dates_the_change() -> None:
    pace = Pace(least=1)
    pace.record(400)
    time = FakeTime()
    retrieve = Script(run("in_progress"), run("requires_action", "s1"))
    seen, moved = await paced_watch(retrieve, time, pace, "in_progress", None)
    assert (seen, moved) == (run("requires_action", "s1"), True)
    # One "still working" poll at 400 ms instead of several from 0 ms.
    assert time.slept == [0.4, 0.1] and retrieve.calls == 2
    # The change came between the poll at 400 ms and the one at 500 ms: dated 450 ms.
    assert pace._waits[-1] == 450


async def test_a_first_poll_sent_too_late_pulls_the_pace_down() -> None:
    pace = Pace(least=1, quantile=0.0)
    pace.record(800)
    time = FakeTime()
    # The run had changed long before the first poll: its change is dated half way there.
    await paced_watch(Script(run("requires_action", "s1")), time, pace, "in_progress", None)
    assert pace.first_poll_ms() == 400


async def test_a_watch_of_a_waiting_step_is_not_paced() -> None:
    pace = Pace(least=1)
    pace.record(800)
    time = FakeTime()
    await paced_watch(Script(run("completed")), time, pace, "requires_action", "s1")
    # Not at once, not paced: a step waiting on us changes when we submit, and the
    # submission says so; the watch is for rarer news, and polls at the backoff's cap.
    assert time.slept == [0.4] and len(pace._waits) == 1


async def test_a_watch_of_a_waiting_step_polls_at_the_backoffs_cap() -> None:
    time = FakeTime()
    retrieve = Script(run("requires_action", "s1"), run("requires_action", "s1"), run("completed"))
    seen, moved = await watch(
        retrieve,
        since_status="requires_action",
        since_step="s1",
        timeout_ms=10_000,
        policy=POLICY,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert (seen.status, moved) == ("completed", True)
    assert time.slept == [0.4, 0.4, 0.4] and retrieve.calls == 3


async def test_a_watch_of_a_step_not_yet_named_polls_from_the_start() -> None:
    # requires_action without a step id (a create found the run already waiting): the
    # coordinator needs the step before it can do anything.
    time = FakeTime()
    retrieve = Script(run("requires_action", "s1"))
    seen, moved = await watch(
        retrieve,
        since_status="requires_action",
        since_step=None,
        timeout_ms=10_000,
        policy=POLICY,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert (seen.step_id, moved) == ("s1", True) and time.slept == [0.1]

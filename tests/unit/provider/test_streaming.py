"""The stream watch loop on scripted streams and a fake clock: resume points, replays, ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from runcoord.provider.errors import ProviderRejected, ProviderUnavailable
from runcoord.provider.polling import BackoffPolicy
from runcoord.provider.port import ProviderRun
from runcoord.provider.streaming import is_news, watch_stream

from .test_polling import FakeTime, Script, run

pytestmark = pytest.mark.anyio

POLICY = BackoffPolicy(100, 2.0, 400)
Event = tuple[int, ProviderRun | None]


class Streams:
    """Each open gets the next scripted stream: its events, then how it ends (an exception
    is raised after the events; None ends it cleanly)."""

    def __init__(self, *streams: tuple[list[Event], Exception | None]) -> None:
        self.streams = list(streams)
        self.opened: list[int | None] = []

    async def __call__(self, after: int | None) -> AsyncGenerator[Event]:
        self.opened.append(after)
        events, end = self.streams.pop(0) if len(self.streams) > 1 else self.streams[0]
        for sequence, seen in events:
            if after is None or sequence > after:
                yield sequence, seen
        if end is not None:
            raise end


async def unchanged(seen: ProviderRun) -> ProviderRun:
    return seen


async def stream_watch(
    streams: Streams,
    retrieve: Script,
    since: tuple[str, str | None],
    timeout_ms: int = 10_000,
    follow: object = unchanged,
) -> tuple[tuple[ProviderRun, bool], FakeTime]:
    time = FakeTime()
    result = await watch_stream(
        streams,
        retrieve,
        follow,  # type: ignore[arg-type]
        since_status=since[0],
        since_step=since[1],
        timeout_ms=timeout_ms,
        policy=POLICY,
        clock=time.clock,
        sleep=time.sleep,
    )
    return result, time


DROP = ProviderUnavailable("connection dropped mid-stream")
STEP = [(0, run("queued")), (1, run("queued")), (2, run("in_progress")), (3, None), (4, None)]
STEP_DONE = [*STEP, (5, run("requires_action", "s1"))]


@pytest.mark.parametrize(
    ("seen", "since", "news"),
    [
        (run("queued"), "queued", True),
        (run("in_progress"), "queued", True),
        (run("requires_action", "s1"), "in_progress", True),
        # A watch that began past the working phase: working events are history.
        (run("queued"), "requires_action", False),
        (run("in_progress"), "requires_action", False),
        (run("in_progress"), "completed", False),
        (run("cancelled"), "requires_action", True),
    ],
)
def test_what_is_news(seen: ProviderRun, since: str, news: bool) -> None:
    assert is_news(seen, since) is news


async def test_the_first_change_on_the_stream_is_the_answer() -> None:
    streams = Streams((STEP_DONE, None))
    retrieve = Script(run("queued"))
    result, time = await stream_watch(streams, retrieve, ("queued", None))
    assert result == (run("requires_action", "s1"), True)
    assert (streams.opened, retrieve.calls, time.slept) == ([None], 0, [])


async def test_a_drop_resumes_after_the_last_sequence_number_seen() -> None:
    streams = Streams((STEP[:3], DROP), (STEP[:4], DROP), (STEP_DONE, None))
    retrieve = Script(run("queued"))
    result, time = await stream_watch(streams, retrieve, ("queued", None))
    assert result == (run("requires_action", "s1"), True)
    assert streams.opened == [None, 2, 3]  # events without a state move the resume point too
    # A short pause before each reconnect; a stream that delivered resets the backoff.
    assert time.slept == [0.1, 0.1]
    assert retrieve.calls == 0


async def test_reconnects_without_progress_back_off() -> None:
    streams = Streams(([], DROP), ([], DROP), ([], DROP), (STEP_DONE, None))
    result, time = await stream_watch(streams, Script(run("queued")), ("queued", None))
    assert result[1] and time.slept == [0.1, 0.2, 0.4]


async def test_nothing_seen_by_the_deadline_raises_the_error() -> None:
    streams = Streams(([], DROP))
    with pytest.raises(ProviderUnavailable):
        await stream_watch(streams, Script(run("queued")), ("queued", None), timeout_ms=1_000)
    assert len(streams.opened) > 1  # retried until the deadline


async def test_a_fatal_error_is_not_retried() -> None:
    gone = ProviderRejected("HTTP 404", status_code=404)
    streams = Streams(([], gone))
    with pytest.raises(ProviderRejected):
        await stream_watch(streams, Script(run("queued")), ("queued", None))
    assert streams.opened == [None]


async def test_a_replayed_history_is_not_reported_and_the_finished_step_is_polled() -> None:
    streams = Streams((STEP_DONE, None))
    retrieve = Script(run("requires_action", "s1"))
    result, time = await stream_watch(
        streams, retrieve, ("requires_action", "s1"), timeout_ms=1_000
    )
    assert result == (run("requires_action", "s1"), False)
    assert streams.opened == [None]  # a finished response is never streamed again
    assert retrieve.calls > 1 and sum(time.slept) == pytest.approx(1.0)


async def test_a_step_answered_through_the_conversation_is_followed() -> None:
    async def follow(seen: ProviderRun) -> ProviderRun:
        return run("in_progress") if seen.step_id == "s1" else seen

    streams = Streams((STEP_DONE, None))
    result, _ = await stream_watch(
        streams, Script(run("queued")), ("requires_action", "s1"), follow=follow
    )
    assert result == (run("in_progress"), True)


async def test_a_stream_ending_without_its_terminal_event_is_explained_by_a_read() -> None:
    streams = Streams((STEP[:3], None))
    retrieve = Script(run("cancelled"))
    result, _ = await stream_watch(streams, retrieve, ("in_progress", None))
    assert result == (run("cancelled"), True)
    assert (streams.opened, retrieve.calls) == ([None], 1)


async def test_a_stream_closed_early_on_a_working_run_is_resumed() -> None:
    streams = Streams((STEP[:3], None), (STEP_DONE, None))
    retrieve = Script(run("in_progress"))
    result, _ = await stream_watch(streams, retrieve, ("queued", None))
    assert result == (run("requires_action", "s1"), True)
    assert (streams.opened, retrieve.calls) == ([None, 2], 1)


async def test_a_timeout_reports_the_runs_state_not_a_replay_cut_short() -> None:
    streams = Streams((STEP[:2], DROP))  # only ever the queued events, then a drop
    retrieve = Script(run("in_progress"))
    result, _ = await stream_watch(streams, retrieve, ("queued", None), timeout_ms=1_000)
    assert result == (run("in_progress"), False)
    assert retrieve.calls == 1  # once, at the end


async def test_a_stream_slow_to_start_still_answers_at_the_deadline() -> None:
    async def silent(after: int | None) -> AsyncGenerator[Event]:
        await asyncio.sleep(10)  # no event, no error, past the (real-time) deadline
        yield 0, run("queued")

    retrieve = Script(run("in_progress"))
    result = await watch_stream(
        silent,
        retrieve,
        unchanged,
        since_status="queued",
        since_step=None,
        timeout_ms=50,
        policy=POLICY,
    )
    assert result == (run("in_progress"), False)
    assert retrieve.calls == 1


class Held:
    """A stream held before its first byte (a latency spike) until ``release`` is set."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.release = asyncio.Event()
        self.opened = 0

    async def __call__(self, after: int | None) -> AsyncGenerator[Event]:
        self.opened += 1
        await self.release.wait()
        for event in self.events:
            yield event


async def held_watch(
    stream: Held, retrieve: Script, since: tuple[str, str | None], hedge_ms: int
) -> tuple[ProviderRun, bool]:
    return await asyncio.wait_for(
        watch_stream(
            stream,
            retrieve,
            unchanged,
            since_status=since[0],
            since_step=since[1],
            timeout_ms=60_000,
            policy=BackoffPolicy(100, 2.0, 400, hedge_ms=hedge_ms),
        ),
        timeout=30,
    )


async def test_a_held_stream_gets_a_read_beside_it_and_a_change_it_shows_is_the_answer() -> None:
    stream = Held(STEP_DONE)
    retrieve = Script(run("requires_action", "s1"))
    # The stream is never released: without the read beside it the watch would hang.
    assert await held_watch(stream, retrieve, ("queued", None), 10) == (
        run("requires_action", "s1"),
        True,
    )
    assert retrieve.calls == 1


async def test_a_read_beside_a_held_stream_that_shows_no_change_leaves_the_stream_to_answer() -> (
    None
):
    stream = Held(STEP_DONE)
    retrieve = Script(run("in_progress"))
    watching = asyncio.ensure_future(held_watch(stream, retrieve, ("queued", None), 10))
    while retrieve.calls < 1:
        await asyncio.sleep(0.001)
    assert not watching.done()
    stream.release.set()
    assert await watching == (run("requires_action", "s1"), True)
    calls = retrieve.calls
    await asyncio.sleep(0.3)
    assert retrieve.calls == calls, "no poll once the watch has answered"


async def test_a_held_stream_is_polled_beside_until_a_poll_shows_the_change() -> None:
    stream = Held(STEP_DONE)
    retrieve = Script(run("in_progress"), run("in_progress"), run("requires_action", "s1"))
    assert await held_watch(stream, retrieve, ("queued", None), 10) == (
        run("requires_action", "s1"),
        True,
    )
    assert retrieve.calls == 3

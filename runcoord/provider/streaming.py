"""Watching a run by its event stream instead of polling: the same answer, sooner, cheaper.

An adapter that can stream (Responses: ``GET /responses/{id}?stream=true``) hands
``watch_stream`` three things: ``open_events(after)``, the stream from its first event or
after sequence number ``after``, as ``(sequence_number, run)`` pairs (``run`` None for an
event that says nothing about the run's status); ``retrieve``, one read of the run; and
``follow``, what a ``requires_action`` state really means (Responses: the turn may have
moved on in a follow-up whose id was lost; see ``ResponsesProvider.retrieve``).

What it returns is what the polling ``watch`` would: ``(run, True)`` on the first change
relative to ``(since_status, since_step)`` (queued and in_progress are one phase), else
``(last run seen, False)`` once ``timeout_ms`` passed. On top:

- A stream replays a response's events from its creation, so a response that finished
  before the watch began still answers at once. While the watch began past the working
  phase, working events are history being replayed (or a follow-up response still
  working): neither is news, so they are skipped, never reported as a change.
- A dropped connection or a transport error mid-stream is resumed with ``starting_after``
  = the last sequence number seen, after a short backoff (reset by every event received),
  until the deadline. A retriable error with no state seen by then is raised, as the
  polling watch raises it.
- A stream that ends after its terminal event leaves nothing more to stream: the response
  is finished, and whatever changes now (a Responses step answered through the
  conversation) is polled for the rest of the watch. A stream that ends without one (a
  cancelled response: the spec has no event for it; or a server that closed early) is
  followed by one ``retrieve``: a change is returned, a run still working is streamed
  again from where it stopped.
- A stream that shows nothing within the policy's ``hedge_ms`` (held by a latency spike
  before its first byte) has the run polled beside it (hedged reads, with the backoff) for
  as long as it stays silent; a change a poll shows is the answer.
- A watch that times out with a state from a stream, or with none and no error (the
  stream was slow to start), reads the run once more (within ``_LAST_LOOK_S``) and
  reports that: the last event seen may be history, e.g. a replay cut short by a drop, and
  a watch must never report an older state than the run's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from runcoord.errors import Retriable
from runcoord.hedging import hedged
from runcoord.provider.polling import Backoff, BackoffPolicy, changed, watch
from runcoord.provider.port import WORKING_STATUSES, ProviderRun

# How long a watch that timed out may spend reading the run's current state.
_LAST_LOOK_S = 1.0

EventSource = Callable[[int | None], AsyncGenerator[tuple[int, ProviderRun | None], None]]


def is_news(run: ProviderRun, since_status: str) -> bool:
    """Whether a state seen on the stream may be reported: not a working state replayed
    to a watch that began past the working phase."""
    return run.status not in WORKING_STATUSES or since_status in WORKING_STATUSES


async def watch_stream(
    open_events: EventSource,
    retrieve: Callable[[], Awaitable[ProviderRun]],
    follow: Callable[[ProviderRun], Awaitable[ProviderRun]],
    *,
    since_status: str,
    since_step: str | None,
    timeout_ms: int,
    policy: BackoffPolicy,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[ProviderRun, bool]:
    streamed = asyncio.Event()  # set by the first event any stream of this watch delivers
    watching = asyncio.ensure_future(
        _watch_stream(
            open_events,
            retrieve,
            follow,
            streamed,
            since_status=since_status,
            since_step=since_step,
            timeout_ms=timeout_ms,
            policy=policy,
            clock=clock,
            sleep=sleep,
        )
    )
    if policy.hedge_ms is None:
        return await watching

    async def look_aside(hedge_s: float) -> tuple[ProviderRun, bool] | None:
        # A stream that has shown nothing after the hedge interval may be held by a latency
        # spike before its first byte: the run is polled beside it (each read hedged), for
        # as long as the stream stays silent. A change a poll shows is the answer.
        backoff = Backoff(policy)
        await asyncio.sleep(hedge_s)
        while not streamed.is_set():
            try:
                current = await hedged(retrieve, policy.hedge_ms)
            except Retriable:
                current = None
            if current is not None and changed(current, since_status, since_step):
                return current, True
            await asyncio.sleep(backoff.next_ms() / 1000)
        return None

    aside = asyncio.ensure_future(look_aside(policy.hedge_ms / 1000))
    try:
        done, _ = await asyncio.wait({watching, aside}, return_when=asyncio.FIRST_COMPLETED)
        if aside in done and aside.exception() is None and (found := aside.result()):
            return found
        return await watching
    finally:
        aside.cancel()
        watching.cancel()


async def _watch_stream(
    open_events: EventSource,
    retrieve: Callable[[], Awaitable[ProviderRun]],
    follow: Callable[[ProviderRun], Awaitable[ProviderRun]],
    streamed: asyncio.Event,
    *,
    since_status: str,
    since_step: str | None,
    timeout_ms: int,
    policy: BackoffPolicy,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> tuple[ProviderRun, bool]:
    deadline = clock() + timeout_ms / 1000
    after: int | None = None  # the last sequence number seen: where a reconnect resumes
    last: ProviderRun | None = None
    from_stream = False  # whether ``last`` came from a stream (else from a retrieve)
    error: Retriable | None = None
    backoff = Backoff(policy)

    async def timed_out() -> tuple[ProviderRun, bool]:
        if last is not None and not from_stream:
            return last, False
        if last is None and error is not None:
            raise error
        # What a stream showed last may be history (a replay cut short by a drop, or
        # working events skipped as not news), or it showed nothing yet (a slow start):
        # report what the run is now, as a poll would.
        try:
            async with asyncio.timeout(_LAST_LOOK_S):
                current = await retrieve()
        except (Retriable, TimeoutError):
            if last is None:
                raise
            return last, False
        return current, changed(current, since_status, since_step)

    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return await timed_out()
        try:
            async with asyncio.timeout(remaining), aclosing(open_events(after)) as events:
                async for sequence, seen in events:
                    after = sequence
                    streamed.set()
                    backoff = Backoff(policy)  # the stream works: the next drop retries soon
                    if seen is None:
                        continue
                    last, error, from_stream = seen, None, True
                    if not is_news(seen, since_status):
                        continue
                    if seen.status == "requires_action":
                        last = seen = await follow(seen)
                        from_stream = False  # followed: what the run is now
                    if changed(seen, since_status, since_step):
                        return seen, True
            ended = True
        except TimeoutError:
            return await timed_out()
        except Retriable as exc:
            error, ended = exc, False
        if ended and (last is None or last.status in WORKING_STATUSES):
            # Ended without its terminal event: ask the run itself why.
            try:
                current = await retrieve()
            except Retriable as exc:
                error = exc
            else:
                last, error, from_stream = current, None, False
                if changed(current, since_status, since_step):
                    return current, True
                ended = current.status not in WORKING_STATUSES
        if ended:
            # Finished: nothing more will be streamed; poll for what the stream cannot show.
            left_ms = max(0, round((deadline - clock()) * 1000))
            try:
                return await watch(
                    retrieve,
                    since_status=since_status,
                    since_step=since_step,
                    timeout_ms=left_ms,
                    policy=policy,
                    clock=clock,
                    sleep=sleep,
                )
            except Retriable:
                if last is None:
                    raise
                return last, False
        # Dropped (or still working after a stream that ended early): resume after a pause.
        await sleep(max(0.0, min(backoff.next_ms() / 1000, deadline - clock())))

"""Watching a run: poll with adaptive backoff until its (status, step) changes or time runs out.

Both adapters watch the same way; only their ``retrieve`` differs. The delay starts short
(a run that just moved usually moves again soon), grows by a factor up to a cap, and never
undercuts the provider's ``openai-poll-after-ms`` hint. A watch returns on the first change,
so every watch starts again from the short delay: that is the reset on change.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from runcoord.errors import Retriable
from runcoord.hedging import hedged
from runcoord.provider.port import WORKING_STATUSES, ProviderRun


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_ms: int = 100
    factor: float = 1.5
    max_ms: int = 2_000
    # A poll still unanswered after this long is sent again beside it (and again after as
    # long, up to three in flight), and the first answer wins: a hedged request
    # (runcoord/hedging.py). A retrieve only reads, so the copies cost nothing but the
    # requests. One slow answer (a provider latency spike) then no longer holds the watch up
    # for its whole duration.
    # None: never.
    hedge_ms: int | None = 500


class Backoff:
    """The delays of one watch: initial, times factor each time, capped; a hint is a floor."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self._policy = policy
        self._next = float(policy.initial_ms)

    def next_ms(self, hint_ms: int | None = None) -> int:
        delay = self._next
        self._next = min(self._next * self._policy.factor, float(self._policy.max_ms))
        return max(round(delay), hint_ms or 0)


class Pace:
    """When a watch of a working run sends its first poll: a low quantile of how long the
    recent such watches waited for their change.

    Polling at once and backing off from 100 ms costs three or four polls per model step of
    a few hundred milliseconds, most of them answered "still working". Each change is dated
    to the midpoint between the last poll that did not see it (or the watch's start) and the
    first that did; a first poll sent too late dates its change earlier, so the estimate
    corrects itself downwards. Until ``least`` watches are on record: at once.
    """

    def __init__(
        self, quantile: float = 0.2, window: int = 256, least: int = 32, cap_ms: int = 1_000
    ) -> None:
        self._quantile = quantile
        self._least = least
        self._cap_ms = cap_ms
        self._waits: deque[float] = deque(maxlen=window)

    def first_poll_ms(self) -> float:
        if len(self._waits) < self._least:
            return 0.0
        ordered = sorted(self._waits)
        return min(ordered[int(self._quantile * (len(ordered) - 1))], self._cap_ms)

    def record(self, waited_ms: float) -> None:
        self._waits.append(max(0.0, waited_ms))


def _phase(status: str) -> str:
    # A move between working statuses ends no watch: reporting it would cost a round trip
    # through the coordinator and a new watch for no decision (a watch that times out still
    # reports the status it last saw).
    return "working" if status in WORKING_STATUSES else status


def changed(run: ProviderRun, since_status: str, since_step: str | None) -> bool:
    return (_phase(run.status), run.step_id) != (_phase(since_status), since_step)


async def watch(
    retrieve: Callable[[], Awaitable[ProviderRun]],
    *,
    since_status: str,
    since_step: str | None,
    timeout_ms: int,
    policy: BackoffPolicy,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    pace: Pace | None = None,
) -> tuple[ProviderRun, bool]:
    """(run, True) on the first change; (the last run seen, False) once ``timeout_ms`` passed.

    A retriable error (the provider briefly unreachable) is polled through until the deadline,
    since a watch only reads; if no poll succeeded by then, the last error is raised. With a
    ``pace``, a watch of a working run sends its first poll when the pace says, and tells it
    when the change came. A watch of a step waiting on us polls at the backoff's cap from
    the start; any other watch first polls after the backoff's first delay: the coordinator
    has just seen that state.
    """
    began = clock()
    deadline = began + timeout_ms / 1000
    backoff = Backoff(policy)
    if since_status == "requires_action" and since_step is not None:
        # A step waiting on us changes when we submit, and the submission's own outcome
        # says so (the coordinator then watches the working run); what a watch of it is for
        # is rarer news (the run cancelled, failed or expired), worth a poll at the
        # backoff's cap, not at its start.
        pace = None
        backoff = Backoff(replace(policy, initial_ms=policy.max_ms))
        first_ms = float(backoff.next_ms())
    elif since_status not in WORKING_STATUSES:
        # A state just seen as it is, by the coordinator (a run cancelling): the news only
        # comes later, so not a poll at once. Only a working run's change is worth pacing
        # polls for.
        pace = None
        first_ms = float(backoff.next_ms())
    else:
        first_ms = pace.first_poll_ms() if pace is not None else 0.0
    if first_ms > 0:
        await sleep(min(first_ms / 1000, timeout_ms / 1000))
    quiet_at = began  # when the run was last seen unchanged (or the watch began)
    last: ProviderRun | None = None
    error: Retriable | None = None
    while True:
        asked_at = clock()
        try:
            last = await hedged(retrieve, policy.hedge_ms)
            error = None
        except Retriable as exc:
            error = exc
        if last is not None and error is None and changed(last, since_status, since_step):
            if pace is not None:
                pace.record(((quiet_at + asked_at) / 2 - began) * 1000)
            return last, True
        if error is None:
            quiet_at = asked_at
        remaining = deadline - clock()
        if remaining <= 0:
            if last is None:
                assert error is not None
                raise error
            return last, False
        hint = last.poll_after_ms if last is not None else None
        await sleep(min(backoff.next_ms(hint) / 1000, remaining))

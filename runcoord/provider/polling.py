"""Watching a run: poll with adaptive backoff until its (status, step) changes or time runs out.

Both adapters watch the same way; only their ``retrieve`` differs. The delay starts short
(a run that just moved usually moves again soon), grows by a factor up to a cap, and never
undercuts the provider's ``openai-poll-after-ms`` hint. A watch returns on the first change,
so every watch starts again from the short delay: that is the reset on change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runcoord.errors import Retriable
from runcoord.provider.port import WORKING_STATUSES, ProviderRun


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_ms: int = 100
    factor: float = 1.5
    max_ms: int = 2_000
    # A poll still unanswered after this long is sent again beside it, and the first answer
    # wins (a hedged request: a retrieve only reads, so two cost nothing but the request).
    # One slow answer (a provider latency spike) then no longer holds the watch up for its
    # whole duration. None: never.
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


async def hedged(
    retrieve: Callable[[], Awaitable[ProviderRun]], hedge_ms: int | None
) -> ProviderRun:
    """``retrieve()``; if it has not answered within ``hedge_ms``, a second one beside it.
    The first answer wins and the other is cancelled; an error counts only when neither
    answers (the last error is raised)."""
    tasks: set[asyncio.Future[ProviderRun]] = {asyncio.ensure_future(retrieve())}
    try:
        if hedge_ms is not None:
            answered, _ = await asyncio.wait(tasks, timeout=hedge_ms / 1000)
            if not answered:
                tasks.add(asyncio.ensure_future(retrieve()))
        pending, error = set(tasks), None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    return task.result()
                error = task.exception()
        assert error is not None
        raise error
    finally:
        # The loser, and on our own cancellation (a stopping executor) every request.
        for task in tasks:
            task.cancel()


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
) -> tuple[ProviderRun, bool]:
    """(run, True) on the first change; (the last run seen, False) once ``timeout_ms`` passed.

    A retriable error (the provider briefly unreachable) is polled through until the deadline,
    since a watch only reads; if no poll succeeded by then, the last error is raised.
    """
    deadline = clock() + timeout_ms / 1000
    backoff = Backoff(policy)
    last: ProviderRun | None = None
    error: Retriable | None = None
    while True:
        try:
            last = await hedged(retrieve, policy.hedge_ms)
            error = None
        except Retriable as exc:
            error = exc
        if last is not None and error is None and changed(last, since_status, since_step):
            return last, True
        remaining = deadline - clock()
        if remaining <= 0:
            if last is None:
                assert error is not None
                raise error
            return last, False
        hint = last.poll_after_ms if last is not None else None
        await sleep(min(backoff.next_ms(hint) / 1000, remaining))

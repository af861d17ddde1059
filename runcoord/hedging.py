"""Hedged requests: one more request beside a slow one, and the first answer wins.

Used for provider reads (runcoord/provider/polling.py) and for tool calls a repeat cannot make
act twice (runcoord/tools/executor.py). A latency spike holds each request on its own, so each
copy is one more chance to miss it; the copies cost requests, nothing else, and only for calls
that are slow already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Requests of one hedged call in flight at most: the first and two hedges.
HEDGE_MOST = 3


async def hedged(
    call: Callable[[], Awaitable[T]],
    after_ms: float | None,
    most: int = HEDGE_MOST,
    *,
    more: Callable[[], bool] = lambda: True,
    gravity: Callable[[BaseException], int] | None = None,
) -> T:
    """``call()``; while none has answered, one more beside it every ``after_ms`` (None:
    never), up to ``most`` in flight and while ``more()`` holds. The first answer wins and
    the others are cancelled (so are all of them when this is). An error counts only when
    every request sent has failed: then the one ``gravity`` ranks first (lowest) is raised,
    or the last one without it."""
    interval_s = None if after_ms is None else after_ms / 1000
    tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(call())]
    pending, failures = set(tasks), []
    try:
        while pending:
            done, pending = await asyncio.wait(
                pending,
                timeout=interval_s if len(tasks) < most else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                error = task.exception()
                if error is None:
                    return task.result()
                failures.append(error)
            if not done and more():  # a hedge interval without an answer
                again = asyncio.ensure_future(call())
                tasks.append(again)
                pending.add(again)
        raise failures[-1] if gravity is None else min(failures, key=gravity)
    finally:
        for task in tasks:
            task.cancel()


def gravest_first(*kinds: type[BaseException]) -> Callable[[BaseException], int]:
    """A ``gravity`` for ``hedged``: failures of ``kinds`` ranked in the order given (the
    first is raised before the others), anything else (a bug) before them all."""

    def gravity(error: BaseException) -> int:
        return next((i for i, kind in enumerate(kinds) if isinstance(error, kind)), -1)

    return gravity

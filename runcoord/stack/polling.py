"""Wait for a condition with a deadline: the only way the stack (and its tests) waits.

A check returns ``None`` when the condition holds, or a short reason why it does not yet;
the last reason is what a timeout reports, so "not up in time" always says what was missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runcoord.errors import StackError


class NotReadyInTime(StackError):
    """A condition did not hold before its deadline."""

    def __init__(self, what: str, timeout: float, last_reason: str) -> None:
        super().__init__(f"{what} not ready within {timeout:.0f}s (last check: {last_reason})")
        self.what = what
        self.last_reason = last_reason


class Deadline:
    """A point in monotonic time; ``remaining()`` never goes below zero."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end


def wait_until(
    check: Callable[[], str | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> None:
    """Call ``check`` until it returns ``None``; raise :class:`NotReadyInTime` at the deadline."""
    deadline = Deadline(timeout)
    while True:
        reason = check()
        if reason is None:
            return
        if deadline.expired():
            raise NotReadyInTime(what, timeout, reason)
        time.sleep(min(interval, deadline.remaining()))

"""Where the simulator reads the time.

Run and response states are computed from the clock on every read (see ``runs.py``), so a
test that injects a ``ManualClock`` drives every transition without waiting for anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds (a float: transitions are scheduled at millisecond grain)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait (or, for a manual clock, let simulated time pass)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to; ``sleep`` moves it instead of waiting."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)

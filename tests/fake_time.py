"""The one fake clock of the tests: a clock, and an async sleep that moves it, never waiting
for real. Pass the object itself where a ``clock: Callable[[], float]`` is wanted."""

from __future__ import annotations


class FakeTime:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds

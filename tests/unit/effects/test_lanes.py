"""The executor's lanes: each kind's bound, its queue, and queued work after a revoke."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from runcoord.effects.runtime import Lane, Lanes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def unused(intent: Any) -> Sequence[Any]:
    return []


class Runs:
    """Work that starts, then waits until it is let go."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def work(self, name: str) -> Any:
        self.gates[name] = asyncio.Event()

        async def run() -> None:
            self.started.append(name)
            await self.gates[name].wait()

        return run

    async def finish(self, name: str) -> None:
        self.gates[name].set()
        for _ in range(5):  # the task ends, then its done callbacks run
            await asyncio.sleep(0)


TOOLS = Lane(frozenset({"tool_call"}), unused, 1)
PROVIDER = Lane(frozenset({"create_run", "observe_run"}), unused, 2)


async def test_a_full_lane_queues_its_own_and_the_others_start_at_once() -> None:
    runs, lanes = Runs(), Lanes([TOOLS, PROVIDER], lambda p, g: True, queued_max=10)
    assert lanes.of("tool_call") is TOOLS and lanes.of("observe_run") is PROVIDER
    assert lanes.of("submit_outputs") is None and lanes.of(None) is None
    assert lanes.offer(TOOLS, 0, 0, runs.work("t1"))
    assert not lanes.offer(TOOLS, 0, 0, runs.work("t2"))  # queued behind t1
    assert lanes.offer(PROVIDER, 1, 0, runs.work("p1"))
    assert lanes.offer(PROVIDER, 1, 0, runs.work("p2"))
    assert not lanes.offer(PROVIDER, 1, 0, runs.work("p3"))
    await asyncio.sleep(0)
    assert runs.started == ["t1", "p1", "p2"] and lanes.queued(TOOLS) == 1
    await runs.finish("t1")  # its place goes to the next one queued in its own lane
    assert runs.started[-1] == "t2" and lanes.queued(TOOLS) == 0 and lanes.queued(PROVIDER) == 1
    await runs.finish("p2")
    assert runs.started[-1] == "p3"
    for name in ("t2", "p1", "p3"):
        await runs.finish(name)
    assert lanes.offer(TOOLS, 0, 0, runs.work("t3"))  # the room came back
    await runs.finish("t3")
    assert not lanes.tasks


async def test_queued_work_of_a_revoked_partition_is_dropped_not_run() -> None:
    revoked = {(2, 0)}
    runs = Runs()
    lanes = Lanes([TOOLS], lambda p, g: (p, g) not in revoked, queued_max=10)
    lanes.offer(TOOLS, 1, 0, runs.work("running"))
    lanes.offer(TOOLS, 2, 0, runs.work("revoked meanwhile"))
    lanes.offer(TOOLS, 3, 0, runs.work("still ours"))
    await asyncio.sleep(0)
    await runs.finish("running")
    assert runs.started == ["running", "still ours"]
    await runs.finish("still ours")
    assert lanes.offer(TOOLS, 4, 0, runs.work("next"))  # the dropped one left no place taken


async def test_reading_waits_while_a_lane_holds_its_most_and_goes_on_once_it_drains() -> None:
    runs, lanes = Runs(), Lanes([TOOLS], lambda p, g: True, queued_max=1)
    stop = threading.Event()
    lanes.offer(TOOLS, 0, 0, runs.work("t1"))
    lanes.offer(TOOLS, 0, 0, runs.work("t2"))
    waiting = asyncio.create_task(lanes.room(TOOLS, stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # full: reading waits
    await runs.finish("t1")  # t2 leaves the queue to run
    await asyncio.wait_for(waiting, 2)
    await runs.finish("t2")

"""The replay driver: one turn at a time per conversation, resubmissions, the budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runcoord.harness.replay.driver import Driver, DriverConfig
from runcoord.harness.systems.port import Finish, Outgoing
from runcoord.harness.workload.trace import TraceTurn


class FakeSystem:
    """A transport double of our own port (no Kafka behind it): records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.done: list[Finish] = []
        self.lock = threading.Lock()

    def send(self, run: Outgoing) -> None:
        with self.lock:
            self.sent.append(run)

    def finished(self) -> list[Finish]:
        out, self.done = self.done, []
        return out

    def duplicate(self, pick: float, intents: bool) -> str:
        return ""

    def close(self) -> None:
        pass

    def finish(self, run_id: str) -> None:
        self.done.append(Finish(run_id, "completed", None, time.time()))


def turn(turn_id: str, conversation: str, resubmit: int | None = None) -> TraceTurn:
    return TraceTurn.model_validate(
        {
            "turn_id": turn_id,
            "tenant": "t1",
            "conversation": conversation,
            "offset_ms": 0,
            "input": "hi",
            "script": {"final": {"latency_ms": 1}},
            "resubmit_after_ms": resubmit,
        }
    )


def until(driver: Driver, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        driver.step()
        time.sleep(0.001)


def make(trace: list[TraceTurn], budget_s: float = 120.0) -> tuple[Driver, FakeSystem]:
    system = FakeSystem()
    threads = iter(f"thread_{i}" for i in range(100))
    driver = Driver(
        trace, system, lambda: next(threads), DriverConfig("r", "assistants", "asst", 1.0, budget_s)
    )
    driver.start()
    return driver, system


def test_a_conversation_runs_one_turn_at_a_time_on_one_thread() -> None:
    driver, system = make([turn("a1", "A"), turn("a2", "A"), turn("b1", "B")])
    until(driver, lambda: len(system.sent) == 2)
    assert sorted(s.run_id for s in system.sent) == ["r-a1", "r-b1"]
    system.finish("r-a1")
    until(driver, lambda: len(system.sent) == 3)
    by_run = {s.run_id: s.thread_id for s in system.sent}
    assert by_run["r-a2"] == by_run["r-a1"] != by_run["r-b1"]
    system.finish("r-a2")
    system.finish("r-b1")
    system.finish("r-b1")  # reported twice: counted once
    until(driver, driver.done)
    assert driver.counts() == {"sent": 3, "finished": 3, "in_flight": 0}
    assert '"final"' in system.sent[0].metadata["sim_script"]
    driver.close()


def test_a_marked_turn_is_resubmitted_after_it_finished() -> None:
    driver, system = make([turn("a1", "A", resubmit=10), turn("a2", "A")])
    until(driver, lambda: len(system.sent) == 1)
    system.finish("r-a1")
    until(driver, lambda: len(system.sent) == 2)
    assert system.sent[1].run_id == "r-a1.r1"  # before the conversation's next turn
    assert driver.runs["r-a1.r1"].resubmission
    system.finish("r-a1.r1")
    until(driver, lambda: len(system.sent) == 3)
    assert system.sent[2].run_id == "r-a2"
    driver.close()


def test_a_stuck_turn_releases_its_conversation_after_the_budget() -> None:
    driver, system = make([turn("a1", "A"), turn("a2", "A")], budget_s=0.2)
    until(driver, lambda: len(system.sent) == 1)
    until(driver, lambda: len(system.sent) == 2, timeout=5)
    assert driver.runs["r-a1"].finished_at is None
    until(driver, driver.done, timeout=5)  # both past the budget: nothing more to wait for
    driver.close()

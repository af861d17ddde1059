"""A partition's runs: the runs-by-phase counts kept as runs change match a recount."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from runcoord.coordinator.loop import Coordinator, LoopConfig
from runcoord.coordinator.partitions import PartitionRuns
from runcoord.domain import Phase
from tests.unit.domain.helpers import POLICY, Driver, start

# A run as the coordinator first stores it, then moved through phases by later puts.
FIRST = Driver(POLICY)
FIRST.feed(start("r0"))
BASE = FIRST.run


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(list(Phase))), max_size=60))
def test_the_phase_counts_always_match_a_recount(puts: list[tuple[int, Phase]]) -> None:
    runs = PartitionRuns(0)
    runs.load([replace(BASE, run_id="r9")], POLICY)
    for i, phase in puts:
        runs.put(replace(BASE, run_id=f"r{i}", phase=phase), POLICY)
        recount = Counter(s.phase.value for s in runs.runs.values())
        assert +runs.phases == recount  # unary +: without the phases counted down to 0


def test_an_idle_coordinator_waits_for_its_next_timer_and_no_longer() -> None:
    """The loop waits for an input until the next timer of a run it owns is due (so timers
    fire on time however long the idle wait is), and batch_wait_ms at most."""
    now_ms = 1_800_000_000_000
    config = LoopConfig(bootstrap="unused:9092", batch_wait_ms=500)
    loop = Coordinator(config, POLICY, clock=lambda: now_ms / 1000)
    assert loop.wait_s() == 0.5  # nothing owned, no timer
    runs = PartitionRuns(0)
    loop.owned[0] = runs
    runs.put(BASE, POLICY)
    due = runs.next_timer_ms()
    assert due is not None
    for ahead_ms, expected in ((10_000, 0.5), (100, 0.1), (0, 0.0), (-50, 0.0)):
        loop.clock = lambda a=ahead_ms: (due - a) / 1000
        assert loop.wait_s() == expected

"""A partition's runs: the runs-by-phase counts kept as runs change match a recount."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

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

"""The offset tracker never lets a commit pass unfinished work."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runcoord.effects.offsets import OffsetTracker


def test_commit_waits_for_the_slowest() -> None:
    t = OffsetTracker()
    for o in range(5):
        t.started(0, o)
    t.finished(0, 1)
    t.finished(0, 2)
    assert t.committable() == {0: 0}
    t.finished(0, 0)
    assert t.committable() == {0: 3}
    assert t.committable() == {}  # unchanged: nothing to commit again
    t.finished(0, 4)
    t.finished(0, 3)
    assert t.committable() == {0: 5}


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_never_past_an_unfinished_offset(order: list[int], k: int) -> None:
    t = OffsetTracker()
    for o in range(30):
        t.started(3, o)
    for o in order[:k]:
        t.finished(3, o)
    unfinished = set(range(30)) - set(order[:k])
    commit = t.committable().get(3, 0)
    assert all(o >= commit for o in unfinished)
    assert commit == (min(unfinished) if unfinished else 30)


def test_work_from_a_revoked_assignment_cannot_finish_a_new_one() -> None:
    t = OffsetTracker()
    old = t.started(0, 7)
    t.forget([0])
    new = t.started(0, 7)
    t.finished(0, 7, old)
    assert t.committable() == {0: 7}
    t.finished(0, 7, new)
    assert t.committable() == {0: 8}

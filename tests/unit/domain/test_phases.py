"""The compiled lookup table says exactly what the `transitions` machine says."""

from __future__ import annotations

import pytest
from transitions import MachineError

from runcoord.domain.phases import (
    TERMINAL,
    IllegalTransition,
    Phase,
    RunLifecycle,
    Trigger,
    advance,
    build_machine,
)


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_table_matches_machine(phase: Phase, trigger: Trigger) -> None:
    model = RunLifecycle()
    build_machine(model, phase)
    try:
        getattr(model, trigger.value)()
        expected: Phase | None = model.state
    except MachineError:
        expected = None
    try:
        got: Phase | None = advance(phase, trigger)
    except IllegalTransition:
        got = None
    assert got == expected


@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_terminal_phases_have_no_way_out(phase: Phase) -> None:
    for trigger in Trigger:
        with pytest.raises(IllegalTransition):
            advance(phase, trigger)

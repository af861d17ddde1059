"""The run lifecycle: phases, the triggers that move between them, and the legal moves.

The machine is declared with `transitions` (Enum states, typed trigger methods) and compiled
once into a lookup table. The pure core calls :func:`advance`, a dict lookup, on its hot
path; ``tests/unit/domain/test_phases.py`` checks the table against the machine for every pair.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from transitions import Machine


class Phase(enum.StrEnum):
    CREATING = "creating"  # accepted; the create-run intent is out
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"  # a step is open; tool intents are out
    SUBMITTING = "submitting"  # the step's outputs are complete; the submission intent is out
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INCOMPLETE = "incomplete"


TERMINAL: frozenset[Phase] = frozenset(
    {Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED, Phase.EXPIRED, Phase.INCOMPLETE}
)
LIVE: tuple[Phase, ...] = tuple(p for p in Phase if p not in TERMINAL)


class Trigger(enum.StrEnum):
    OBSERVE_QUEUED = "observe_queued"
    OBSERVE_IN_PROGRESS = "observe_in_progress"
    OPEN_STEP = "open_step"
    SUBMIT = "submit"
    REQUEST_CANCEL = "request_cancel"
    OBSERVE_CANCELLING = "observe_cancelling"
    FINISH_COMPLETED = "finish_completed"
    FINISH_FAILED = "finish_failed"
    FINISH_CANCELLED = "finish_cancelled"
    FINISH_EXPIRED = "finish_expired"
    FINISH_INCOMPLETE = "finish_incomplete"


_P = Phase
# Where the provider says a run is queued or working, we follow it: after our submission it
# goes back to queued, and a step answered elsewhere (never by us) also lands here.
_WORKING_FROM = [_P.CREATING, _P.QUEUED, _P.IN_PROGRESS, _P.REQUIRES_ACTION, _P.SUBMITTING]

TRANSITIONS: list[dict[str, object]] = [
    {"trigger": Trigger.OBSERVE_QUEUED, "source": _WORKING_FROM, "dest": _P.QUEUED},
    {"trigger": Trigger.OBSERVE_IN_PROGRESS, "source": _WORKING_FROM, "dest": _P.IN_PROGRESS},
    # The provider is the authority on steps: a new step while ours is open means it was
    # answered elsewhere; we follow and the journal records the superseded step.
    {"trigger": Trigger.OPEN_STEP, "source": _WORKING_FROM, "dest": _P.REQUIRES_ACTION},
    {"trigger": Trigger.SUBMIT, "source": _P.REQUIRES_ACTION, "dest": _P.SUBMITTING},
    # Also while the provider is already cancelling on its own (OBSERVE_CANCELLING, nobody
    # here asked): our own request then records the reason and when we stop waiting.
    {
        "trigger": Trigger.REQUEST_CANCEL,
        "source": [*_WORKING_FROM, _P.CANCELLING],
        "dest": _P.CANCELLING,
    },
    {
        "trigger": Trigger.OBSERVE_CANCELLING,
        "source": [*_WORKING_FROM, _P.CANCELLING],
        "dest": _P.CANCELLING,
    },
    # Terminal phases absorb: no transition leaves them.
    *[
        dict[str, object](trigger=trigger, source=list(LIVE), dest=dest)
        for trigger, dest in [
            (Trigger.FINISH_COMPLETED, _P.COMPLETED),
            (Trigger.FINISH_FAILED, _P.FAILED),
            (Trigger.FINISH_CANCELLED, _P.CANCELLED),
            (Trigger.FINISH_EXPIRED, _P.EXPIRED),
            (Trigger.FINISH_INCOMPLETE, _P.INCOMPLETE),
        ]
    ],
]


class RunLifecycle:
    """The typed model `transitions` binds to; used to build the table and in tests."""

    state: Phase

    def observe_queued(self) -> bool:
        raise RuntimeError("bound by transitions")

    def observe_in_progress(self) -> bool:
        raise RuntimeError("bound by transitions")

    def open_step(self) -> bool:
        raise RuntimeError("bound by transitions")

    def submit(self) -> bool:
        raise RuntimeError("bound by transitions")

    def request_cancel(self) -> bool:
        raise RuntimeError("bound by transitions")

    def observe_cancelling(self) -> bool:
        raise RuntimeError("bound by transitions")

    def finish_completed(self) -> bool:
        raise RuntimeError("bound by transitions")

    def finish_failed(self) -> bool:
        raise RuntimeError("bound by transitions")

    def finish_cancelled(self) -> bool:
        raise RuntimeError("bound by transitions")

    def finish_expired(self) -> bool:
        raise RuntimeError("bound by transitions")

    def finish_incomplete(self) -> bool:
        raise RuntimeError("bound by transitions")


def build_machine(model: RunLifecycle, initial: Phase) -> Machine:
    return Machine(
        model=model,
        states=Phase,
        transitions=TRANSITIONS,
        initial=initial,
        model_override=True,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )


def _compile() -> Mapping[tuple[Phase, Trigger], Phase]:
    machine = build_machine(RunLifecycle(), Phase.CREATING)
    table: dict[tuple[Phase, Trigger], Phase] = {}
    for trigger in Trigger:
        for source, transitions in machine.events[trigger.value].transitions.items():
            # transitions names Enum states by member name.
            table[(Phase[source], trigger)] = Phase[str(transitions[0].dest)]
    return table


TABLE: Mapping[tuple[Phase, Trigger], Phase] = _compile()


class IllegalTransition(ValueError):
    def __init__(self, phase: Phase, trigger: Trigger) -> None:
        super().__init__(f"{trigger.value} is not allowed in phase {phase.value}")
        self.phase = phase
        self.trigger = trigger


def can(phase: Phase, trigger: Trigger) -> bool:
    return (phase, trigger) in TABLE


def advance(phase: Phase, trigger: Trigger) -> Phase:
    try:
        return TABLE[(phase, trigger)]
    except KeyError:
        raise IllegalTransition(phase, trigger) from None

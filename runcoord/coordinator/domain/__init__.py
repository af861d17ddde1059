"""The pure run domain: state, inputs, events, intents and the decision function. No I/O."""

from runcoord.coordinator.domain.decide import Decision, decide, error_output, next_due
from runcoord.coordinator.domain.evolve import JournalError, evolve, fold
from runcoord.coordinator.domain.model import Output, RunState, Step, ToolCall
from runcoord.coordinator.domain.phases import TERMINAL, Phase
from runcoord.coordinator.domain.policy import Policy, ToolRule

__all__ = [
    "TERMINAL",
    "Decision",
    "JournalError",
    "Output",
    "Phase",
    "Policy",
    "RunState",
    "Step",
    "ToolCall",
    "ToolRule",
    "decide",
    "error_output",
    "evolve",
    "fold",
    "next_due",
]

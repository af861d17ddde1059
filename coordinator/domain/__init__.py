"""The pure run domain: state, inputs, events, intents and the decision function. No I/O."""

from coordinator.domain.decide import Decision, decide, error_output, next_due
from coordinator.domain.evolve import JournalError, evolve, fold
from coordinator.domain.model import Output, RunState, Step, ToolCall
from coordinator.domain.phases import TERMINAL, Phase
from coordinator.domain.policy import Policy, ToolRule

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

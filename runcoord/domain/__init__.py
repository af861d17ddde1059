"""The pure run domain: state, inputs, events, intents and the decision function. No I/O."""

from runcoord.domain.decide import Decision, decide, error_output, next_due
from runcoord.domain.evolve import JournalError, evolve, fold
from runcoord.domain.model import Output, RunState, Step, ToolCall
from runcoord.domain.phases import TERMINAL, Phase
from runcoord.domain.policy import Policy, ToolRule

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

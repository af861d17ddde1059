"""The provider port and its adapters over the official openai SDK (Assistants, Responses)."""

from runcoord.provider.assistants import AssistantsProvider
from runcoord.provider.errors import (
    OutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    Unreconcilable,
)
from runcoord.provider.polling import BackoffPolicy
from runcoord.provider.port import (
    OBSERVE_MODES,
    RUN_ID_KEY,
    STATUSES,
    STEP_KEY,
    TERMINAL_STATUSES,
    Observe,
    ProviderRun,
    RunProvider,
    SubmitOutcome,
    SubmitStatus,
)
from runcoord.provider.responses import ResponsesProvider

__all__ = [
    "OBSERVE_MODES",
    "RUN_ID_KEY",
    "STATUSES",
    "STEP_KEY",
    "TERMINAL_STATUSES",
    "AssistantsProvider",
    "BackoffPolicy",
    "Observe",
    "OutcomeUnknown",
    "ProviderRejected",
    "ProviderRun",
    "ProviderUnavailable",
    "ResponsesProvider",
    "RunProvider",
    "SubmitOutcome",
    "SubmitStatus",
    "Unreconcilable",
]

"""The provider port and its adapters over the official openai SDK (Assistants, Responses).

The adapters are imported on first use (PEP 562): the Assistants adapter brings 0.8 s of the
openai SDK's types, and an executor restarted after a kill -9 should not wait for a protocol
its runs do not use (runcoord/provider/cli.py, Adapters).
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from runcoord.provider.assistants import AssistantsProvider
    from runcoord.provider.responses import ResponsesProvider


def __getattr__(name: str) -> Any:
    if name == "AssistantsProvider":
        from runcoord.provider.assistants import AssistantsProvider

        return AssistantsProvider
    if name == "ResponsesProvider":
        from runcoord.provider.responses import ResponsesProvider

        return ResponsesProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

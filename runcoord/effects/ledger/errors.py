"""The ledger's errors, under runcoord's one base: retry only what is Retriable."""

from __future__ import annotations

from runcoord.errors import Fatal, Retriable, RuncoordError


class LedgerError(RuncoordError):
    """Base of every error the effect ledger raises."""


class RequestConflict(LedgerError, Fatal):
    """The effect key is already claimed for a different request (request_hash differs).

    Effect keys are derived from the tool call's identity, so this means a bug upstream: two
    different requests were given one key. Retrying cannot help and acting could do harm.
    """

    def __init__(self, key: str, stored_hash: str, claimed_hash: str) -> None:
        super().__init__(
            f"effect {key!r} is recorded for request {stored_hash[:12]}…, "
            f"claimed for request {claimed_hash[:12]}…"
        )
        self.key = key
        self.stored_hash = stored_hash
        self.claimed_hash = claimed_hash


class LedgerUnavailable(LedgerError, Retriable):
    """The ledger's store could not be reached or dropped the connection (e.g. a restart).

    The operation's outcome is unknown; every ledger operation is safe to repeat.
    """


class LedgerMisconfigured(LedgerError, Fatal):
    """The store answered but cannot serve the ledger (missing table, wrong permissions)."""

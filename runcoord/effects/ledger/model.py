"""What the ledger stores and what a claim answers. Plain frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

# A result as stored in the `result` jsonb column.
JSON = dict[str, Any] | list[Any] | str | int | float | bool | None


class EffectState(StrEnum):
    CLAIMED = "claimed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # An attempt may have reached the outside world and nobody can tell whether it acted
    # (the tool neither honours keys nor offers a lookup). Final, like the other two.
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self is not EffectState.CLAIMED


FINAL_STATES = frozenset(s for s in EffectState if s.final)


@dataclass(frozen=True)
class EffectMeta:
    """Who the effect belongs to and what it asks; fixed by the first claim."""

    kind: str
    tenant: str
    run_id: str
    step_id: str | None
    tool_call_id: str | None
    request_hash: str


@dataclass(frozen=True)
class Acquired:
    """The caller holds the effect until its lease lapses; it must use `token` everywhere.

    `previous_sent` is True when an earlier attempt reached `mark_sent` and never completed:
    the outside world may already have acted, so the caller must not send blindly. It must
    re-send with the same idempotency key, reconcile by lookup, or complete as UNKNOWN.
    """

    key: str
    token: int
    attempt: int
    previous_sent: bool
    # True: this claim marked the effect sent itself (claim(..., sending=True) of a new row),
    # so the holder's first send is on record without a mark_sent.
    marked_sent: bool = False


@dataclass(frozen=True)
class Finished:
    """The effect already has its final outcome: hand it back, touch nothing outside."""

    key: str
    state: EffectState
    result: JSON
    error: str | None


@dataclass(frozen=True)
class Busy:
    """Another attempt holds a live lease (even if `owner` is the caller: see Ledger.claim)."""

    key: str
    owner: str
    retry_after_s: float


Claim = Acquired | Finished | Busy


@dataclass(frozen=True)
class EffectRecord:
    """One ledger row, as `Ledger.get` returns it."""

    key: str
    meta: EffectMeta
    state: EffectState
    fencing_token: int
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    sent_at: datetime | None
    completed_at: datetime | None
    result: JSON
    error: str | None

    def finished(self) -> Finished:
        if not self.state.final:
            raise ValueError(f"effect {self.key!r} is still {self.state}")
        return Finished(key=self.key, state=self.state, result=self.result, error=self.error)

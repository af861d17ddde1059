"""The trace format: one JSON object per line, one user turn each (README.md, "Traces").

A trace is the whole workload: who asks (tenant), in which conversation, when (offset from
the replay's start), what the user typed, and the simulated provider's script for the turn
(the tool calls the model will make, step by step, and its latencies). Users replay their
own traces, so the format is validated on read and every error names its line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runcoord.errors import ConfigError


class TraceApproval(BaseModel):
    """The simulated approver's script for a call that needs approval (its arguments carry
    ``approval_required: true``, which the replay's tool rules ask approval for): what it
    decides, how long after the request, how many times it sends the decision again, and
    whether a second approver sends the opposite decision (which must be refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["approve", "reject", "none"]
    after_ms: int = Field(default=500, ge=0)
    duplicates: int = Field(default=0, ge=0, le=10)
    conflicting: bool = False


# The argument that marks a call as needing approval (the replay's approval rule tests it).
APPROVAL_ARGUMENT = "approval_required"


class TraceCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    arguments: dict[str, Any] = Field(default_factory=dict)
    approval: TraceApproval | None = None


class TraceStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tool_calls: list[TraceCall] = Field(min_length=1)
    latency_ms: float = Field(ge=0)


class TraceFinal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = "Done."
    latency_ms: float = Field(ge=0)


class TraceScript(BaseModel):
    """The simulated provider's script format (runcoord/sim/provider/README.md), a strict subset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[TraceStep] = Field(default_factory=list)
    final: TraceFinal

    def calls(self) -> list[TraceCall]:
        return [call for step in self.steps for call in step.tool_calls]

    def model_ms(self) -> float:
        """Simulated model time of the whole turn (steps and final), queueing excluded."""
        return sum(s.latency_ms for s in self.steps) + self.final.latency_ms

    def to_sim(self, **extra: Any) -> dict[str, Any]:
        """The simulated provider's script: the approver's parts are the harness's own."""
        script = self.model_dump(mode="json")
        for step in script["steps"]:
            for call in step["tool_calls"]:
                call.pop("approval", None)
        return {**script, **extra}

    def approvals(self) -> dict[tuple[int, int], TraceApproval]:
        """(step index, call index) -> the approver's script, for the calls that have one."""
        return {
            (k, i): call.approval
            for k, step in enumerate(self.steps)
            for i, call in enumerate(step.tool_calls)
            if call.approval is not None
        }


class TraceTurn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    turn_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tenant: str = Field(min_length=1)
    conversation: str = Field(min_length=1)
    offset_ms: int = Field(ge=0)
    input: str
    script: TraceScript
    # The client sends this turn again (a new run, same words) this long after the original
    # finished: a user pressing "retry". Its effects are the client's doing, not the system's.
    resubmit_after_ms: int | None = Field(default=None, ge=0)


def read_trace(path: Path) -> list[TraceTurn]:
    """Every turn of a trace file, in offset order; a bad line is a ConfigError naming it."""
    turns: list[TraceTurn] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"trace {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            turn = TraceTurn.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"trace {path}:{number}: {exc}") from exc
        if turn.turn_id in seen:
            raise ConfigError(f"trace {path}:{number}: turn_id {turn.turn_id} repeats")
        seen.add(turn.turn_id)
        turns.append(turn)
    if not turns:
        raise ConfigError(f"trace {path}: no turns")
    turns.sort(key=lambda t: t.offset_ms)
    return turns


def dump_turns(turns: Iterable[TraceTurn]) -> Iterator[str]:
    for turn in turns:
        yield json.dumps(turn.model_dump(mode="json", exclude_none=True), separators=(",", ":"))


def write_trace(path: Path, turns: Iterable[TraceTurn]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for line in dump_turns(turns):
            out.write(line + "\n")
            count += 1
    return count

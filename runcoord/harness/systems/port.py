"""What the replay driver needs from a system under test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runcoord.harness.replay.procs import Supervisor
from runcoord.harness.workload.trace import TraceApproval


@dataclass(frozen=True)
class Finish:
    run_id: str
    status: str
    reason: str | None
    at: float  # unix seconds, as the system reported it


@dataclass(frozen=True)
class Outgoing:
    """A run to start: the driver's view, independent of the system's wire format."""

    run_id: str
    tenant: str
    thread_id: str
    assistant_id: str
    provider: str
    input: str
    metadata: dict[str, str]
    # (step index, call index) -> the simulated approver's script for that call.
    approvals: Mapping[tuple[int, int], TraceApproval] = field(default_factory=dict)


class Transport(Protocol):
    def send(self, run: Outgoing) -> None:
        """Hand the run to the system (thread-safe)."""
        ...

    def finished(self) -> list[Finish]:
        """Runs the system reported terminal since the last call."""
        ...

    def duplicate(self, pick: float, intents: bool) -> str:
        """Deliver an already-delivered input (or intent) once more; say what was repeated."""
        ...

    def close(self) -> None: ...


class System(Protocol):
    name: str

    def replicas(self, supervisor: Supervisor) -> None:
        """Add the system's replicas (not started) to the supervisor."""
        ...

    def transport(self) -> Transport: ...

    def topics(self) -> dict[str, int]:
        """Extra topics (name without prefix -> partitions) the system needs."""
        ...

    def groups(self) -> dict[str, int]:
        """Consumer group -> members expected once every replica has joined."""
        ...

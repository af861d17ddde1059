"""Time in requires_action per step, from the simulated provider's records (not the system's
own account).

The simulator moves a run on a fixed schedule (runcoord/sim/provider/README.md, "How a run moves"):
step 0 needs outputs ``queue_ms + latency(0)`` after the run was created, step k that long
after the submission that answered step k-1 was accepted. So the moment each step entered
requires_action follows from the records and the turn's script; the moment it left is its
accepted submission. A step nobody answered waited until the run ended or the replay did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runcoord.harness.workload.trace import TraceTurn

TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled", "expired"})


@dataclass(frozen=True)
class StepWait:
    run_id: str  # ours
    provider_run_id: str
    index: int
    entered_at: float
    wait_s: float
    answered: bool
    attempts: int  # submissions the provider saw for this step (accepted or not)


@dataclass(frozen=True)
class ProviderRunView:
    run_id: str
    provider_run_id: str
    status: str | None
    tool_steps_reached: int
    completed: bool


def analyse(
    records: Mapping[str, Any],
    turn_of_run: Mapping[str, TraceTurn],
    queue_ms: float,
    ended_at: float,
    finished_at: Mapping[str, float],
) -> tuple[list[StepWait], list[ProviderRunView]]:
    """Every step reached by every provider run carrying one of our run ids."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sub in records.get("submissions", []):
        by_run[sub["run_id"]].append(sub)
    waits: list[StepWait] = []
    views: list[ProviderRunView] = []
    queue_s = queue_ms / 1000
    for create in records.get("runs", []):
        ours = create.get("our_run_id")
        if create.get("follow_up") or ours not in turn_of_run:
            continue
        script = turn_of_run[ours].script
        subs = sorted(by_run.get(create["id"], []), key=lambda s: s["seq"])
        accepted = [s for s in subs if s["accepted"]]
        attempts_by_step: dict[str, int] = defaultdict(int)
        for sub in subs:
            attempts_by_step[str(sub.get("step_id"))] += 1
        status = create.get("status")
        # A run the provider still shows waiting is waiting, whatever the system reported.
        end = min(ended_at, finished_at.get(ours, ended_at)) if status in TERMINAL else ended_at
        base = float(create["created_at"])
        reached = 0
        for index, step in enumerate(script.steps):
            entered = base + queue_s + step.latency_ms / 1000
            if entered > ended_at:
                break
            reached += 1
            if index < len(accepted):
                sub = accepted[index]
                left = float(sub["at"])
                tries = attempts_by_step.get(str(sub.get("step_id")), 1)
                waits.append(
                    StepWait(
                        ours, create["id"], index, entered, max(0.0, left - entered), True, tries
                    )
                )
                base = left
                continue
            # Never answered: it waited until the run ended (cancel, expiry) or the replay did.
            after = accepted[index - 1]["seq"] if index else 0
            tries = sum(1 for s in subs if s["seq"] > after)
            waits.append(
                StepWait(ours, create["id"], index, entered, max(0.0, end - entered), False, tries)
            )
            break
        views.append(ProviderRunView(ours, create["id"], status, reached, status == "completed"))
    return waits, views

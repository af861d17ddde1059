"""Where a tool step's time goes: the step's wait cut into hops, from the evidence only.

A step waits in requires_action from the moment the simulated provider put it there
(report/steps.py) until the provider accepted its outputs. Between the two, runcoord's own
records say when each hand-over happened:

- ``observe``: entered requires_action → the coordinator journaled ``StepOpened`` (the
  provider executor noticing, its report on ``runs.inbox``, the coordinator's transaction);
- ``dispatch``: ``StepOpened`` → the tool executor claimed the step's first call in the
  ledger (the intent's transaction committing, the executor's pickup, the claim);
- ``to_gateway``: that claim → the call's request reaching the tool's gateway;
- ``tool``: the first request at the gateway → the last call's ledger completion (the tools'
  own time, calls of one step running side by side);
- ``record``: the last completion → the last ``ToolOutputRecorded`` (the executor's report,
  the coordinator's transaction);
- ``submit_dispatch``: the last output recorded → the submission executor's ledger claim;
- ``submit``: that claim → the provider accepting the outputs.

Clocks: the coordinator's ``at_ms``, PostgreSQL's ``now()`` (a transaction's start) for the
ledger, the simulators' wall clocks; one machine in a replay, so one clock to a few ms. A
hop whose two ends are not both on record (a call refused by policy never reaches the
gateway; a step never answered has no submission) is left out of that hop's figures only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runcoord.domain import events as ev
from runcoord.harness.report.steps import StepWait

HOPS = (
    "observe",
    "dispatch",
    "to_gateway",
    "tool",
    "record",
    "submit_dispatch",
    "submit",
)


@dataclass(frozen=True)
class _Marks:
    """The moments (unix seconds) one step passed each hand-over; None when not on record."""

    entered: float
    opened: float | None = None
    claimed: float | None = None
    arrived: float | None = None
    completed: float | None = None
    recorded: float | None = None
    submit_claimed: float | None = None
    accepted: float | None = None

    def hops(self) -> dict[str, float]:
        ends = (
            ("observe", self.entered, self.opened),
            ("dispatch", self.opened, self.claimed),
            ("to_gateway", self.claimed, self.arrived),
            ("tool", self.arrived, self.completed),
            ("record", self.completed, self.recorded),
            ("submit_dispatch", self.recorded, self.submit_claimed),
            ("submit", self.submit_claimed, self.accepted),
        )
        return {name: b - a for name, a, b in ends if a is not None and b is not None}


def step_hops(
    waits: Sequence[StepWait],
    journal: Mapping[str, Sequence[ev.JournalEvent]],
    ledger: Iterable[Mapping[str, Any]],
    arrivals: Iterable[Mapping[str, Any]],
    submissions: Iterable[Mapping[str, Any]],
) -> dict[str, list[float]]:
    """Each hop's durations (seconds) over every step of ``waits`` found in the journal."""
    opened, recorded = _journal_marks(journal)
    claims: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    submit_claims: dict[str, float] = {}
    for row in ledger:
        step = row.get("step_id")
        if step is None or row.get("claimed_at") is None:
            continue
        if row["kind"] == "tool_call":
            claims[step].append((_unix(row["claimed_at"]), _maybe_unix(row.get("completed_at"))))
        elif row["kind"] == "submit_outputs":
            at = _unix(row["claimed_at"])
            submit_claims[step] = min(at, submit_claims.get(step, at))
    first_arrival: dict[tuple[str, str], float] = {}
    for a in arrivals:
        key = (str(a.get("run_id")), str(a.get("tool_call_id")))
        first_arrival[key] = min(float(a["at"]), first_arrival.get(key, float("inf")))
    accepted = {str(s.get("step_id")): float(s["at"]) for s in submissions if s.get("accepted")}
    out: dict[str, list[float]] = {name: [] for name in HOPS}
    for w in waits:
        steps = opened.get(w.run_id, [])
        if w.index >= len(steps):
            continue
        step_id, opened_at, call_ids = steps[w.index]
        step_claims = claims.get(step_id, [])
        done = [c for _, c in step_claims if c is not None]
        arrived = [first_arrival[(w.run_id, c)] for c in call_ids if (w.run_id, c) in first_arrival]
        marks = _Marks(
            entered=w.entered_at,
            opened=opened_at,
            claimed=min((c for c, _ in step_claims), default=None),
            arrived=min(arrived, default=None),
            # The tools are done when every claimed call is.
            completed=max(done) if done and len(done) == len(step_claims) else None,
            recorded=recorded.get(step_id),
            submit_claimed=submit_claims.get(step_id),
            accepted=accepted.get(step_id),
        )
        for name, seconds in marks.hops().items():
            out[name].append(seconds)
    return out


def _journal_marks(
    journal: Mapping[str, Sequence[ev.JournalEvent]],
) -> tuple[dict[str, list[tuple[str, float, list[str]]]], dict[str, float]]:
    """Per run its steps in order (step id, opened at, call ids); per step its last output."""
    opened: dict[str, list[tuple[str, float, list[str]]]] = {}
    recorded: dict[str, float] = {}
    for run_id, events in journal.items():
        steps = []
        for e in sorted(events, key=lambda e: e.seq):
            if isinstance(e, ev.StepOpened):
                steps.append((e.step_id, e.at_ms / 1000, [c.id for c in e.calls]))
            elif isinstance(e, ev.ToolOutputRecorded):
                recorded[e.step_id] = max(e.at_ms / 1000, recorded.get(e.step_id, 0.0))
        opened[run_id] = steps
    return opened, recorded


def _unix(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def _maybe_unix(value: Any) -> float | None:
    return None if value is None else _unix(value)

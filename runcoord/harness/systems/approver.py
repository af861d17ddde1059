"""The simulated approver: a person deciding, per the trace's script, on the calls runcoord
holds for approval.

It reads the journal as any consumer would: ``StepOpened`` says which provider step and call
ids a turn's k-th step got, ``ApprovalRequested`` names the call now waiting. Its trace script
(``TraceApproval``: the k-th step's i-th call) says what to decide and when; the decision goes
to ``runs.inbox`` as the agent API would put it there, carrying the arguments hash and rules
version the request showed. ``duplicates`` sends the same decision again; ``conflicting`` has a
second approver send the opposite one right after (it must be refused). ``none``: nobody
decides, and the deadline must answer the model.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runcoord.domain import events as ev
from runcoord.domain.inputs import ApprovalDecision
from runcoord.harness.workload.trace import TraceApproval

APPROVER = "sim-approver"
SECOND_APPROVER = "sim-approver-2"


@dataclass
class _Run:
    tenant: str
    scripts: Mapping[tuple[int, int], TraceApproval]
    steps: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # id -> k, calls


class SimApprover:
    def __init__(self, send: Callable[[ApprovalDecision], None]) -> None:
        self._send = send
        self._runs: dict[str, _Run] = {}
        self._due: list[tuple[float, int, ApprovalDecision]] = []
        self._order = itertools.count()
        self._lock = threading.Condition()
        self._stop = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="sim-approver", daemon=True)
        self._thread.start()

    def expect(
        self, run_id: str, tenant: str, scripts: Mapping[tuple[int, int], TraceApproval]
    ) -> None:
        """A run was sent whose calls at these (step, call) positions have approver scripts."""
        if scripts:
            with self._lock:
                self._runs[run_id] = _Run(tenant, scripts)

    def on_event(self, event: ev.JournalEvent) -> None:
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None:
                return
            if isinstance(event, ev.StepOpened) and event.step_id not in run.steps:
                run.steps[event.step_id] = (len(run.steps), tuple(c.id for c in event.calls))
            elif isinstance(event, ev.ApprovalRequested):
                self._schedule(event, run)

    def _schedule(self, event: ev.ApprovalRequested, run: _Run) -> None:
        k, calls = run.steps.get(event.step_id, (-1, ()))
        a = event.approval
        script = (
            run.scripts.get((k, calls.index(a.tool_call_id))) if a.tool_call_id in calls else None
        )
        if script is None or script.decision == "none":
            return  # nobody decides: the approval's deadline must answer the model
        at = time.time() + script.after_ms / 1000

        def decision(kind: str, who: str, reason: str) -> ApprovalDecision:
            return ApprovalDecision(
                event.run_id, run.tenant, a.approval_id, kind, reason, who,
                a.arguments_hash, a.policy_version, int(at * 1000),
            )  # fmt: skip

        first = decision(script.decision, APPROVER, f"scripted {script.decision}")
        plan = [first] * (1 + script.duplicates)
        if script.conflicting:
            other = "reject" if script.decision == "approve" else "approve"
            plan.append(decision(other, SECOND_APPROVER, f"scripted conflicting {other}"))
        for i, d in enumerate(plan):
            heapq.heappush(self._due, (at + 0.05 * i, next(self._order), d))
        self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and (not self._due or self._due[0][0] > time.time()):
                    wait = self._due[0][0] - time.time() if self._due else None
                    self._lock.wait(wait)
                if self._stop:
                    return
                _, _, d = heapq.heappop(self._due)
            self._send(d)
            self.sent += 1

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(10)

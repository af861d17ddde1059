"""The replay driver: sends each turn when its offset comes, one turn at a time per
conversation, resubmits where the trace or the plan says, and collects the finishes.

A conversation's next turn waits for the previous one to finish (as a user waits for the
answer), but not past the terminal budget: a stuck turn does not hold its conversation
forever, the next turn goes (and meets whatever the stuck one left behind, as a user would).
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from runcoord.harness.report.data import RunRecord
from runcoord.harness.systems.port import Outgoing, Transport
from runcoord.harness.workload.trace import TraceTurn

ThreadFactory = Callable[[], str]  # creates a provider thread / conversation, returns its id
PENDING = "(resubmission pending)"  # a conversation held for its turn's resubmission


@dataclass
class _Conversation:
    thread_id: str | None = None
    busy: str | None = None  # run id in flight
    busy_since: float = 0.0
    waiting: deque[tuple[TraceTurn, bool]] = field(default_factory=deque)


@dataclass
class DriverConfig:
    replay_id: str
    provider: str  # assistants | responses
    assistant_id: str
    scale: float = 1.0  # multiplies every offset (rate control)
    budget_s: float = 120.0
    senders: int = 4


class Driver:
    def __init__(
        self,
        trace: list[TraceTurn],
        transport: Transport,
        new_thread: ThreadFactory,
        config: DriverConfig,
    ) -> None:
        self.trace = trace
        self.transport = transport
        self.new_thread = new_thread
        self.config = config
        self.runs: dict[str, RunRecord] = {}
        self.inflight: dict[str, RunRecord] = {}
        self._conversations: dict[str, _Conversation] = {}
        self._next = 0
        self._budget_check_at = 0.0
        self._by_id = {t.turn_id: t for t in trace}
        self._timers: list[tuple[float, int, TraceTurn]] = []  # resubmissions due
        self._seq = itertools.count()
        self._marks: dict[str, int] = {}  # run id -> resubmit after ms (plan's marks)
        self._resubmitted: set[str] = set()
        self._pool = ThreadPoolExecutor(config.senders, thread_name_prefix="send")
        self._lock = threading.Lock()
        self.send_errors: list[str] = []
        self.t0 = 0.0
        self.window_s = (trace[-1].offset_ms / 1000 * config.scale) if trace else 0.0

    # ------------------------------------------------------------------ sending
    def start(self) -> None:
        self.t0 = time.time()

    def run_id(self, turn: TraceTurn, resubmission: bool) -> str:
        return f"{self.config.replay_id}-{turn.turn_id}{'.r1' if resubmission else ''}"

    def _dispatch(self, turn: TraceTurn, resubmission: bool, now: float) -> None:
        conversation = self._conversations.setdefault(turn.conversation, _Conversation())
        if conversation.busy is not None:
            conversation.waiting.append((turn, resubmission))
            return
        run_id = self.run_id(turn, resubmission)
        record = RunRecord(run_id, turn.turn_id, turn.tenant, turn.conversation, resubmission, now)
        conversation.busy, conversation.busy_since = run_id, now
        self.runs[run_id] = record
        self.inflight[run_id] = record
        self._pool.submit(self._send, turn, record, conversation)

    def _send(self, turn: TraceTurn, record: RunRecord, conversation: _Conversation) -> None:
        try:
            if conversation.thread_id is None:
                conversation.thread_id = self.new_thread()
            outgoing = Outgoing(
                run_id=record.run_id,
                tenant=turn.tenant,
                thread_id=conversation.thread_id,
                assistant_id=self.config.assistant_id,
                provider=self.config.provider,
                input=turn.input,
                metadata={"sim_script": json.dumps(turn.script.to_sim(), separators=(",", ":"))},
                approvals=turn.script.approvals(),
            )
            record.sent_at = time.time()
            self.transport.send(outgoing)
        except Exception as exc:  # a send that failed is a turn the system never got
            with self._lock:
                self.send_errors.append(f"{record.run_id}: {type(exc).__name__}: {exc}")

    def mark_resubmit(self, after_ms: int) -> str:
        """The plan's client resubmission: the newest original run in flight gets sent again
        ``after_ms`` after it finishes."""
        for run_id in reversed(list(self.inflight)):
            record = self.inflight[run_id]
            if not record.resubmission and run_id not in self._marks:
                self._marks[run_id] = after_ms
                return run_id
        return ""

    # ------------------------------------------------------------------ the loop
    def step(self) -> None:
        now = time.time()
        elapsed = now - self.t0
        while self._next < len(self.trace):
            turn = self.trace[self._next]
            if turn.offset_ms / 1000 * self.config.scale > elapsed:
                break
            self._next += 1
            self._dispatch(turn, False, now)
        while self._timers and self._timers[0][0] <= now:
            _, _, turn = heapq.heappop(self._timers)
            self._conversations[turn.conversation].busy = None  # it was held for this
            self._dispatch(turn, True, now)
        for finish in self.transport.finished():
            record = self.runs.get(finish.run_id)
            if record is None or record.finished_at is not None:
                continue  # not ours, or reported twice (a duplicate delivery ran it again)
            record.finished_at, record.status, record.reason = (
                finish.at,
                finish.status,
                finish.reason,
            )
            self.inflight.pop(finish.run_id, None)
            self._release(record, now)
        # A run past its budget no longer holds its conversation (checked once a second:
        # a 50k-turn trace has tens of thousands of conversations).
        if now < self._budget_check_at:
            return
        self._budget_check_at = now + 1.0
        for conversation in self._conversations.values():
            busy = conversation.busy
            if busy in self.runs and now - conversation.busy_since > self.config.budget_s:
                self._release(self.runs[busy], now, timed_out=True)

    def _release(self, record: RunRecord, now: float, timed_out: bool = False) -> None:
        conversation = self._conversations[record.conversation]
        if conversation.busy != record.run_id:
            return
        conversation.busy = None
        turn = self._turn(record.turn_id)
        after = self._marks.get(record.run_id, turn.resubmit_after_ms)
        if not record.resubmission and after is not None and record.run_id not in self._resubmitted:
            self._resubmitted.add(record.run_id)
            base = now if timed_out or record.finished_at is None else record.finished_at
            heapq.heappush(self._timers, (base + after / 1000, next(self._seq), turn))
            conversation.busy, conversation.busy_since = PENDING, now
            return
        if conversation.waiting:
            waiting, resubmission = conversation.waiting.popleft()
            self._dispatch(waiting, resubmission, now)

    def _turn(self, turn_id: str) -> TraceTurn:
        return self._by_id[turn_id]

    def done(self) -> bool:
        """Everything sent, and every run finished or past its budget."""
        if self._next < len(self.trace) or self._timers:
            return False
        if any(c.waiting or c.busy == PENDING for c in self._conversations.values()):
            return False
        now = time.time()
        return all(now - r.sent_at > self.config.budget_s for r in self.inflight.values())

    def close(self) -> None:
        # Sends not started yet are dropped: the replay is over (or was interrupted).
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ figures
    def counts(self) -> dict[str, int]:
        return {
            "sent": len(self.runs),
            "finished": len(self.runs) - len(self.inflight),
            "in_flight": len(self.inflight),
        }

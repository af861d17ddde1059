"""Fault points for fault tests: a process kills or freezes itself at a named line.

``RUNCOORD_FAULT_AT=ACTION@POINT[:N]``: the N-th time (default 1st) the process reaches
``fault_point(POINT)`` it sends itself SIGKILL (``kill``: dies mid-operation, as kill -9
does) or SIGSTOP (``stop``: a zombie that wakes up later, as after a GC pause), or the thread
that reached it blocks for ever (``hang``: as a client library call that never returns,
while the rest of the process goes on). Off unless the variable is set; the check is one
dict lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from runcoord.config import load

log = logging.getLogger(__name__)

ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "hang": None}


class FaultPlan:
    def __init__(self, spec: str | None) -> None:
        self.action: str | None = None
        self.point: str | None = None
        self.nth = 1
        self._seen = 0
        self._lock = threading.Lock()
        if spec:
            action, _, where = spec.partition("@")
            point, _, nth = where.partition(":")
            if action not in ACTIONS or not point:
                raise ValueError(f"fault spec {spec!r}: want kill|stop|hang@POINT[:N]")
            self.action, self.point, self.nth = action, point, int(nth or 1)

    def reached(self, point: str) -> None:
        if point != self.point or self.action is None:
            return
        with self._lock:
            self._seen += 1
            fire = self._seen == self.nth
        if fire:
            log.error("fault point %s reached: %s", point, self.action)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sig = ACTIONS[self.action]
            if sig is None:
                threading.Event().wait()
            else:
                os.kill(os.getpid(), sig)


_PLAN: FaultPlan | None = None


def fault_point(point: str) -> None:
    global _PLAN
    if _PLAN is None:  # a process that never called configure(): the setting decides
        _PLAN = FaultPlan(load().fault_at)
    _PLAN.reached(point)


def configure(spec: str | None) -> None:
    """Arm this process's fault plan: a CLI flag's value, else RUNCOORD_FAULT_AT."""
    global _PLAN
    _PLAN = FaultPlan(spec if spec is not None else load().fault_at)

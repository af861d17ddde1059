"""Fault knobs of the sandbox tool gateway. All off by default; set by `--config FILE` (YAML) at
start or `POST /_sim/faults` (same shape, replaces the whole config) while running::

    seed: 7              # fault draws are a pure function of (seed, knob, tool, request, n)
    window_s: 30         # optional: everything switches itself off this long after being set
    global:              # every tool, unless the tool names the same knob itself
      latency:          {rate: 0.1, ms: 800}      # hold the request, then handle it
      error_before_act: {rate: 0.05, status: 503} # answer 5xx; nothing was done
    tools:
      create_ticket:
        slow_success:   {rate: 1.0, ms: 3000}  # act, then answer after ms (past the timeout)
        drop_after_act: {rate: 0.2}            # act, then close the connection, no answer

A caller that gives up during a latency spike does not stop the request: a write tool still acts
afterwards, as a real server would (one more way for a caller to meet an unknown outcome), unless
the request's X-Request-Deadline has passed by then: the deadline is checked after the spike,
right before acting, and a late write is refused (408) without acting.

A request is identified by its Idempotency-Key, else X-Tool-Call-Id, else its payload hash;
`n` counts the gateway's deliveries of that identity, so the k-th retry of a call meets the same
fate in every run, however concurrent requests interleave.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class _Knob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=0.0, ge=0.0, le=1.0)


K = TypeVar("K", bound=_Knob)


class Latency(_Knob):
    ms: int = Field(default=500, ge=0)


class ErrorBeforeAct(_Knob):
    status: int = Field(default=503, ge=500, le=599)


class SlowSuccess(_Knob):
    ms: int = Field(default=5000, ge=0)


class DropAfterAct(_Knob):
    pass


class ToolFaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: Latency | None = None
    error_before_act: ErrorBeforeAct | None = None
    slow_success: SlowSuccess | None = None
    drop_after_act: DropAfterAct | None = None

    def over(self, base: ToolFaults) -> ToolFaults:
        """This rule's knobs, and base's for every knob this rule leaves unset."""
        return ToolFaults(
            latency=self.latency or base.latency,
            error_before_act=self.error_before_act or base.error_before_act,
            slow_success=self.slow_success or base.slow_success,
            drop_after_act=self.drop_after_act or base.drop_after_act,
        )


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    seed: int = 0
    window_s: float | None = Field(default=None, gt=0)
    global_: ToolFaults = Field(default_factory=ToolFaults, alias="global")
    tools: dict[str, ToolFaults] = Field(default_factory=dict)

    def rule(self, tool: str) -> ToolFaults:
        own = self.tools.get(tool)
        return self.global_ if own is None else own.over(self.global_)

    def check_tools(self, known: Iterable[str]) -> None:
        unknown = sorted(set(self.tools) - set(known))
        if unknown:
            raise ValueError(f"faults.tools: unknown tools {unknown}")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Decision:
    latency_s: float = 0.0
    error_status: int | None = None
    slow_s: float = 0.0
    drop: bool = False


def draw(seed: int, knob: str, tool: str, identity: str, n: int) -> float:
    """A uniform number in [0, 1) that depends on its arguments only."""
    digest = hashlib.sha256(f"{seed}|{knob}|{tool}|{identity}|{n}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FaultPlan:
    """The config in force, delivery counts per request identity, and what fired."""

    def __init__(self, config: FaultConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.fired: Counter[str] = Counter()
        self.set(config)

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._set_at = self._clock()
            self._deliveries: Counter[tuple[str, str]] = Counter()
            self.fired = Counter()

    @property
    def config(self) -> FaultConfig:
        window = self._config.window_s
        if window is not None and self._clock() >= self._set_at + window:
            return FaultConfig(seed=self._config.seed)
        return self._config

    def decide(self, tool: str, identity: str) -> Decision:
        config = self.config
        rule = config.rule(tool)
        with self._lock:
            self._deliveries[(tool, identity)] += 1
            n = self._deliveries[(tool, identity)]

        def fire(name: str, knob: K | None) -> K | None:
            if knob is None or draw(config.seed, name, tool, identity, n) >= knob.rate:
                return None
            with self._lock:
                self.fired[f"{tool}.{name}"] += 1  # drawn; slow/drop apply only if it acted
            return knob

        latency = fire("latency", rule.latency)
        error = fire("error_before_act", rule.error_before_act)
        slow = fire("slow_success", rule.slow_success)
        return Decision(
            latency_s=latency.ms / 1000 if latency else 0.0,
            error_status=error.status if error else None,
            slow_s=slow.ms / 1000 if slow else 0.0,
            drop=fire("drop_after_act", rule.drop_after_act) is not None,
        )

"""Fault knobs: latency spikes, 5xx before the change, lost responses after it, event
streams dropped mid-way, slow models.

Everything is off unless a config file, a flag or ``POST /_sim/faults`` turns it on. Each
endpoint handler passes through ``gate`` before it changes anything, naming its endpoint
class; the gate sleeps for a spike, raises a 5xx (nothing applied), or marks the response to
be lost once the change is applied (``middleware.py`` then answers 500 or drops the
connection: the unknown-outcome case a coordinator must reconcile).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from starlette.requests import Request

from runcoord.sim.provider.clock import Clock
from runcoord.sim.provider.errors import ApiError

EndpointClass = Literal["create", "submit", "retrieve", "list", "cancel", "other"]
ENDPOINT_CLASSES: tuple[str, ...] = ("create", "submit", "retrieve", "list", "cancel", "other")
LostMode = Literal["500", "drop"]
LOST_STATE_KEY = "sim_lost"

_SERVER_ERRORS = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


@dataclass(frozen=True)
class EndpointFaults:
    error_rate: float = 0.0  # answer a 5xx before applying anything
    error_status: int = 500
    lost_rate: float = 0.0  # apply the change, then lose the response
    lost_mode: LostMode = "500"  # "500": answer 500; "drop": close the connection mid-response
    spike_rate: float = 0.0  # hold the request this long before handling it
    spike_ms: float = 0.0
    stream_drop_rate: float = 0.0  # close an event stream's connection before an event
    max_faults: int | None = None  # the rule goes quiet after this many faults (None: never)


@dataclass(frozen=True)
class FaultConfig:
    endpoints: Mapping[str, EndpointFaults] = field(default_factory=dict)  # class or "*"
    slow_factor: float = 1.0  # multiplies every simulated model latency
    window_s: float | None = None  # faults switch themselves off this long after being set

    def rule(self, endpoint_class: str) -> EndpointFaults | None:
        return self.endpoints.get(endpoint_class, self.endpoints.get("*"))

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoints": {name: asdict(rule) for name, rule in self.endpoints.items()},
            "slow_factor": self.slow_factor,
            "window_s": self.window_s,
        }


def parse_faults(data: object) -> FaultConfig:
    """The ``faults`` section of the config file, or a ``POST /_sim/faults`` body."""
    if data is None:
        return FaultConfig()
    if not isinstance(data, dict):
        raise ValueError("faults: expected an object")
    unknown = set(data) - {"endpoints", "slow_factor", "window_s", "seed"}
    if unknown:
        raise ValueError(f"faults: unknown keys {sorted(unknown)}")
    endpoints: dict[str, EndpointFaults] = {}
    for name, rule in (data.get("endpoints") or {}).items():
        if name != "*" and name not in ENDPOINT_CLASSES:
            raise ValueError(f"faults.endpoints: '{name}' is not one of {ENDPOINT_CLASSES} or '*'")
        endpoints[name] = _parse_rule(name, rule)
    slow = float(data.get("slow_factor", 1.0))
    if slow <= 0:
        raise ValueError("faults.slow_factor: must be > 0")
    window = data.get("window_s")
    return FaultConfig(endpoints, slow, None if window is None else float(window))


def _parse_rule(name: str, rule: object) -> EndpointFaults:
    if not isinstance(rule, dict):
        raise ValueError(f"faults.endpoints.{name}: expected an object")
    allowed = set(EndpointFaults.__dataclass_fields__)
    unknown = set(rule) - allowed
    if unknown:
        raise ValueError(f"faults.endpoints.{name}: unknown keys {sorted(unknown)}")
    parsed = EndpointFaults(**rule)
    for rate in ("error_rate", "lost_rate", "spike_rate", "stream_drop_rate"):
        value = getattr(parsed, rate)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"faults.endpoints.{name}.{rate}: must be between 0 and 1")
    if parsed.error_status not in _SERVER_ERRORS:
        raise ValueError(f"faults.endpoints.{name}.error_status: one of {sorted(_SERVER_ERRORS)}")
    if parsed.lost_mode not in ("500", "drop"):
        raise ValueError(f"faults.endpoints.{name}.lost_mode: '500' or 'drop'")
    return parsed


@dataclass(frozen=True)
class Decision:
    spike_s: float = 0.0
    error_status: int | None = None
    lost: LostMode | None = None


class Faults:
    """The fault config in force, its random source, and how often each fault fired."""

    def __init__(self, config: FaultConfig, clock: Clock, seed: int | None = None) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        # Stream drops draw from their own generator: whether streams are read (and how many
        # events they carry) never shifts the other knobs' sequence.
        self._stream_rng = random.Random(None if seed is None else f"stream-{seed}")
        self.fired: Counter[str] = Counter()
        self.set(config)

    def set(self, config: FaultConfig, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = random.Random(seed)
            self._stream_rng = random.Random(f"stream-{seed}")
        self._config = config
        self._set_at = self._clock.now()
        self._per_rule: Counter[str] = Counter()

    @property
    def config(self) -> FaultConfig:
        window = self._config.window_s
        if window is not None and self._clock.now() >= self._set_at + window:
            self._config = FaultConfig()
        return self._config

    @property
    def slow_factor(self) -> float:
        return self.config.slow_factor

    def decide(self, endpoint_class: EndpointClass) -> Decision:
        rule = self.config.rule(endpoint_class)
        if rule is None:
            return Decision()
        if rule.max_faults is not None and self._per_rule[endpoint_class] >= rule.max_faults:
            return Decision()
        # Always draw three numbers, so one knob's setting never shifts another's sequence.
        spike, error, lost = self._rng.random(), self._rng.random(), self._rng.random()
        decision = Decision(
            spike_s=rule.spike_ms / 1000 if spike < rule.spike_rate else 0.0,
            error_status=rule.error_status if error < rule.error_rate else None,
            lost=rule.lost_mode if lost < rule.lost_rate and error >= rule.error_rate else None,
        )
        for name, hit in (
            ("spike", decision.spike_s > 0),
            ("error", decision.error_status is not None),
            ("lost", decision.lost is not None),
        ):
            if hit:
                self.fired[f"{endpoint_class}.{name}"] += 1
                self._per_rule[endpoint_class] += 1
        return decision

    def drop_stream(self, endpoint_class: EndpointClass) -> bool:
        """Whether to close an event stream's connection now, before its next event."""
        rule = self.config.rule(endpoint_class)
        if rule is None or rule.stream_drop_rate <= 0:
            return False
        if rule.max_faults is not None and self._per_rule[endpoint_class] >= rule.max_faults:
            return False
        if self._stream_rng.random() >= rule.stream_drop_rate:
            return False
        self.fired[f"{endpoint_class}.stream_drop"] += 1
        self._per_rule[endpoint_class] += 1
        return True

    def to_json(self) -> dict[str, Any]:
        return {**self.config.to_json(), "fired": dict(self.fired)}


async def gate(faults: Faults, clock: Clock, request: Request, cls: EndpointClass) -> Decision:
    """Apply the faults due before a handler changes anything; mark a lost response."""
    decision = faults.decide(cls)
    if decision.spike_s > 0:
        await clock.sleep(decision.spike_s)
    if decision.error_status is not None:
        raise ApiError(
            decision.error_status, _SERVER_ERRORS[decision.error_status], type="server_error"
        )
    if decision.lost is not None:
        request.scope.setdefault("state", {})[LOST_STATE_KEY] = decision.lost
    return decision

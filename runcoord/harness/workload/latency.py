"""Model latency distributions for generated turns (``--latency``).

Spec syntax: ``KIND:key=value,...``, e.g. ``lognormal:median=400,sigma=0.6,max=5000``,
``exponential:mean=300``, ``fixed:ms=250``. Every draw is clamped to ``[min, max]``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_KINDS = {"lognormal": {"median", "sigma"}, "exponential": {"mean"}, "fixed": {"ms"}}
DEFAULT_SPEC = "lognormal:median=400,sigma=0.6,min=20,max=5000"


@dataclass(frozen=True)
class LatencyDist:
    kind: str
    params: dict[str, float]
    min_ms: float = 0.0
    max_ms: float = 60_000.0

    def draw(self, rng: random.Random) -> float:
        if self.kind == "lognormal":
            value = self.params["median"] * math.exp(self.params["sigma"] * rng.gauss(0.0, 1.0))
        elif self.kind == "exponential":
            value = rng.expovariate(1.0 / self.params["mean"])
        else:
            value = self.params["ms"]
        return round(min(self.max_ms, max(self.min_ms, value)), 1)

    def typical_ms(self) -> float:
        """A central value, for spacing a conversation's turns."""
        p = self.params
        return p.get("median") or p.get("mean") or p.get("ms") or 0.0


def parse_latency(spec: str) -> LatencyDist:
    kind, _, rest = spec.partition(":")
    if kind not in _KINDS:
        raise ValueError(f"latency {spec!r}: kind must be one of {sorted(_KINDS)}")
    values: dict[str, float] = {}
    for part in filter(None, rest.split(",")):
        key, eq, raw = part.partition("=")
        if not eq:
            raise ValueError(f"latency {spec!r}: {part!r} is not key=value")
        try:
            values[key.strip()] = float(raw)
        except ValueError:
            raise ValueError(f"latency {spec!r}: {raw!r} is not a number") from None
    low, high = values.pop("min", 0.0), values.pop("max", 60_000.0)
    missing, unknown = _KINDS[kind] - set(values), set(values) - _KINDS[kind]
    if missing or unknown:
        raise ValueError(
            f"latency {spec!r}: {kind} takes {sorted(_KINDS[kind])} (+ min, max); "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    if any(v < 0 for v in values.values()) or low > high:
        raise ValueError(f"latency {spec!r}: values must be >= 0 and min <= max")
    return LatencyDist(kind, values, low, high)

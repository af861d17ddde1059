"""The fault plan format (runcoord/harness/README.md, "Fault plans"): YAML, validated strictly.

Times are seconds from the replay's first turn ("45", "45s", "2m") or a share of the
replay's send window ("40%"), so one plan fits a 30-turn test and a 50k-turn soak.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runcoord.errors import ConfigError

_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|s|ms|m)?\s*$")
ROLES = ("coordinator", "executor-provider", "executor-tools", "executor-submissions")
ENDPOINT_CLASSES = ("*", "create", "submit", "retrieve", "list", "cancel", "other")


class When(BaseModel):
    """A point in the replay: seconds, or a share of the send window."""

    model_config = ConfigDict(frozen=True)

    value: float
    share: bool  # True: value is a fraction of the send window

    def seconds(self, window_s: float) -> float:
        return self.value * window_s if self.share else self.value


def parse_when(raw: object) -> When:
    if isinstance(raw, When):
        return raw
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"{raw!r} is not a time")
    if isinstance(raw, int | float):
        return When(value=float(raw), share=False)
    match = _TIME.match(str(raw))
    if not match:
        raise ValueError(f"{raw!r} is not a time: use 30, 30s, 500ms, 2m or 40%")
    number, unit = float(match.group(1)), match.group(2) or "s"
    scale = {"%": 0.01, "s": 1.0, "ms": 0.001, "m": 60.0}[unit]
    return When(value=number * scale, share=unit == "%")


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator(
        "at", "duration", "down_for", "restart_after", mode="before", check_fields=False
    )
    @classmethod
    def _time(cls, raw: object) -> When | None:
        return None if raw is None else parse_when(raw)

    @field_validator("between", mode="before", check_fields=False)
    @classmethod
    def _window(cls, raw: object) -> tuple[When, When]:
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise ValueError("between: want [start, end]")
        return parse_when(raw[0]), parse_when(raw[1])


class _Window(_Fault):
    at: When
    duration: When


Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class ProviderLatency(_Window):
    """Hold provider requests ``ms`` (a latency spike), at rate, per endpoint class."""

    kind: Literal["provider_latency"]
    rate: Rate = 1.0
    ms: int = Field(default=3000, ge=0)
    endpoints: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("endpoints")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        bad = sorted(set(value) - set(ENDPOINT_CLASSES))
        if bad:
            raise ValueError(f"unknown endpoint classes {bad}; known: {list(ENDPOINT_CLASSES)}")
        return value


class ProviderErrors(ProviderLatency):
    """5xx before applying (``error_rate``) and lost answers after applying (``lost_rate``)."""

    kind: Literal["provider_errors"]  # type: ignore[assignment]
    error_rate: Rate = 0.0
    lost_rate: Rate = 0.0
    lost_mode: Literal["500", "drop"] = "drop"


class _GatewayWindow(_Window):
    rate: Rate = 1.0
    tools: list[str] | None = None  # None: every tool


class GatewayLatency(_GatewayWindow):
    kind: Literal["gateway_latency"]
    ms: int = Field(default=1500, ge=0)


class SlowSuccess(_GatewayWindow):
    """The tool acts, then answers ``ms`` later: past the caller's timeout."""

    kind: Literal["slow_success"]
    ms: int = Field(default=3000, ge=0)


class GatewayErrors(_GatewayWindow):
    """``error_before_act`` at ``rate`` (nothing done) and ``drop_after_act`` at ``drop_rate``."""

    kind: Literal["gateway_errors"]
    drop_rate: Rate = 0.0


class Kill(_Fault):
    """kill -9 of a named replica (``role:index``), restarted after ``restart_after``."""

    kind: Literal["kill"]
    target: str
    at: When
    restart_after: When | None = Field(default_factory=lambda: When(value=2.0, share=False))

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        role, _, index = value.partition(":")
        if role not in ROLES or not index.isdigit():
            raise ValueError(f"target {value!r}: want ROLE:INDEX, ROLE one of {list(ROLES)}")
        return value


class KillRandom(_Fault):
    """``count`` kills -9 at random times in ``between``, of random replicas of ``roles``."""

    kind: Literal["kill_random"]
    between: tuple[When, When]
    count: int = Field(ge=1)
    roles: list[str] = Field(default_factory=lambda: list(ROLES))
    restart_after: When | None = Field(default_factory=lambda: When(value=2.0, share=False))

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        bad = sorted(set(value) - set(ROLES))
        if bad:
            raise ValueError(f"unknown roles {bad}; known: {list(ROLES)}")
        return value


class BrokerRestart(_Fault):
    kind: Literal["broker_restart"]
    at: When
    down_for: When = Field(default_factory=lambda: When(value=5.0, share=False))
    mode: Literal["kill", "stop"] = "kill"
    broker: int = Field(default=0, ge=0)


class RedisOutage(_Window):
    kind: Literal["redis_outage"]


class PostgresOutage(_Window):
    kind: Literal["postgres_outage"]


class DuplicateDelivery(_Fault):
    """Re-produce ``count`` already-sent inputs (and, for runcoord, effect intents)."""

    kind: Literal["duplicate_delivery"]
    between: tuple[When, When]
    count: int = Field(ge=1)
    intents: bool = True


class ClientResubmit(_Fault):
    """Mark ``count`` random turns sent in ``between`` for a client resubmission."""

    kind: Literal["client_resubmit"]
    between: tuple[When, When]
    count: int = Field(ge=1)
    after_ms: int = Field(default=1000, ge=0)


Fault = Annotated[
    ProviderLatency
    | ProviderErrors
    | GatewayLatency
    | SlowSuccess
    | GatewayErrors
    | Kill
    | KillRandom
    | BrokerRestart
    | RedisOutage
    | PostgresOutage
    | DuplicateDelivery
    | ClientResubmit,
    Field(discriminator="kind"),
]


class FaultPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "unnamed"
    description: str = ""
    seed: int = 0
    faults: list[Fault] = Field(default_factory=list)


def plan_path(name_or_path: str) -> Path:
    """A shipped plan by name (``none``, ``incident``, ``chaos``) or a YAML file's path."""
    shipped = resources.files("runcoord.harness").joinpath("plans", f"{name_or_path}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    return Path(name_or_path)


def parse_plan(data: object, source: str = "plan") -> FaultPlan:
    try:
        return FaultPlan.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"fault plan {source}: {exc}") from exc


def load_plan(name_or_path: str) -> FaultPlan:
    path = plan_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"fault plan {name_or_path}: {exc}") from exc
    plan = parse_plan(data, str(path))
    return plan if plan.name != "unnamed" else plan.model_copy(update={"name": path.stem})

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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runcoord.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)?$")
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|s|ms|m)?\s*$")
ROLES = ("coordinator", "executor-provider", "executor-tools", "executor-submissions")
# The named fault points each role's processes reach (``fault_point(...)`` in runcoord;
# runcoord/faults.py): RUNCOORD_FAULT_AT=kill|stop@POINT[:N] makes a replica kill or stop itself
# there.
FAULT_POINTS: dict[str, tuple[str, ...]] = {
    "coordinator": (
        "after_produce",
        "in_send_offsets",
        "before_commit",
        "after_commit",
        "in_revoke",
    ),
    "executor-provider": ("provider.after_create", "provider.after_create_thread"),
    "executor-tools": ("tool.after_send",),
    "executor-submissions": ("submit.after_send",),
}
PARTITION_TOPICS = ("runs.inbox", "runs.events", "runs.state", "effects")
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


def check_target(value: str, roles: tuple[str, ...] = ROLES) -> str:
    role, _, index = value.partition(":")
    if role not in roles or not index.isdigit():
        raise ValueError(f"target {value!r}: want ROLE:INDEX, ROLE one of {list(roles)}")
    return value


class Kill(_Fault):
    """kill -9 of a named replica (``role:index``), restarted after ``restart_after``."""

    kind: Literal["kill"]
    target: str
    at: When
    restart_after: When | None = Field(default_factory=lambda: When(value=2.0, share=False))

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return check_target(value)


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


class _AtPoint(_Fault):
    """A replica armed with RUNCOORD_FAULT_AT so that it faults itself at a named point."""

    target: str
    point: str | None = None
    nth: int = Field(default=1, ge=1)
    # How long the harness waits for the point to be reached (from the replay's start);
    # None: until the replay ends. A point never reached is a fault that did not fire.
    within: When | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return check_target(value)

    @model_validator(mode="after")
    def _point_of_role(self) -> _AtPoint:
        if self.point is not None:
            role = self.target.partition(":")[0]
            if self.point not in FAULT_POINTS[role]:
                raise ValueError(
                    f"{role} has no fault point {self.point!r}; its points: "
                    f"{list(FAULT_POINTS[role])}"
                )
        return self

    @property
    def role(self) -> str:
        return self.target.partition(":")[0]

    @property
    def index(self) -> int:
        return int(self.target.partition(":")[2])


class KillAt(_AtPoint):
    """The replica kills itself (SIGKILL) the ``nth`` time it reaches ``point``; once the
    harness has seen it die it is restarted, unarmed, ``restart_after`` later.

    Armed from its first start (``at`` unset), or restarted armed at ``at`` (a graceful stop,
    then a start with the point armed)."""

    kind: Literal["kill_at"]
    point: str
    at: When | None = None
    restart_after: When = Field(default_factory=lambda: When(value=2.0, share=False))


class Pause(_AtPoint):
    """SIGSTOP of a replica, SIGCONT ``duration`` later: a zombie that wakes up.

    Either at a time (``at``), or where the replica stops itself (``point``: armed from its
    first start with RUNCOORD_FAULT_AT=stop@POINT:nth; ``duration`` counts from the moment the
    harness sees it stopped). Past the ledger lease (30 s) for an executor, past the group
    session timeout (10 s) for a coordinator."""

    kind: Literal["pause"]
    at: When | None = None
    duration: When

    @model_validator(mode="after")
    def _at_or_point(self) -> Pause:
        if (self.at is None) == (self.point is None):
            raise ValueError("pause: give either at (a time) or point (a fault point), not both")
        return self


class LeaderKill(_Fault):
    """kill -9 of the broker leading ``partition`` of ``topic`` (this replay's), restarted
    ``down_for`` later. Needs the plan's own cluster (``stack: {kafka_brokers: 3}``)."""

    kind: Literal["leader_kill"]
    at: When
    down_for: When = Field(default_factory=lambda: When(value=10.0, share=False))
    topic: Literal["runs.inbox", "runs.events", "runs.state", "effects"] = "runs.inbox"
    partition: int = Field(default=0, ge=0)


class Partition(_Fault):
    """Cut a coordinator off from every broker for ``duration``, then heal
    (runcoord/harness/replay/netpart.py): ``reset`` resets its connections and refuses new
    ones, ``blackhole`` stops every byte and holds new connections."""

    kind: Literal["partition"]
    target: str
    at: When
    duration: When
    mode: Literal["reset", "blackhole"] = "reset"

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        # A coordinator's only peers are the brokers; an executor's include PostgreSQL, Redis
        # and the simulators, which the namespace would cut off too.
        return check_target(value, ("coordinator",))


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
    | ClientResubmit
    | KillAt
    | Pause
    | LeaderKill
    | Partition,
    Field(discriminator="kind"),
]


class StackSpec(BaseModel):
    """Servers started for this plan alone (by ``runcoord replay`` and the fault matrix), so
    that its outages touch nothing else on the shared stack; the replay reaches them through
    RUNCOORD_BOOTSTRAP_SERVERS / RUNCOORD_POSTGRES_DSN / RUNCOORD_REDIS_URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka_brokers: int | None = Field(default=None, ge=1, le=5)  # a private KRaft cluster
    postgres: bool = False
    redis: bool = False

    @property
    def private(self) -> bool:
        return self.kafka_brokers is not None or self.postgres or self.redis


class ReplicaSpec(BaseModel):
    """Replica counts the plan needs (a zombie needs a second executor to take over)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coordinators: int | None = Field(default=None, ge=1)
    executors: int | None = Field(default=None, ge=1)


class FaultPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "unnamed"
    description: str = ""
    seed: int = 0
    stack: StackSpec = Field(default_factory=StackSpec)
    replicas: ReplicaSpec = Field(default_factory=ReplicaSpec)
    # Who creates each conversation's provider thread: the driver (a client that owns its
    # threads), or runcoord (the agent API's conversations: StartRun.conversation; the
    # provider executor creates it once, at its first turn). The baseline: always the driver.
    threads: Literal["driver", "runcoord"] = "driver"
    faults: list[Fault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs(self) -> FaultPlan:
        if (
            any(isinstance(f, LeaderKill) for f in self.faults)
            and (self.stack.kafka_brokers or 0) < 3
        ):
            raise ValueError(
                "leader_kill needs the plan's own cluster of 3 or more brokers "
                "(stack: {kafka_brokers: 3}): a leader must have followers to move to"
            )
        armed: dict[str, str] = {}
        for fault in self.faults:
            if isinstance(fault, KillAt | Pause) and fault.point is not None and fault.at is None:
                if fault.target in armed:
                    raise ValueError(
                        f"{fault.target} is armed twice from its start ({armed[fault.target]}"
                        f" and {fault.point}): a process holds one RUNCOORD_FAULT_AT"
                    )
                armed[fault.target] = fault.point
        return self


def plan_path(name_or_path: str) -> Path:
    """A shipped plan by name (``none``, ``incident``, ``chaos``; the fault matrix's as
    ``matrix/NAME``) or a YAML file's path."""
    if _NAME.match(name_or_path):
        shipped = resources.files("runcoord.harness").joinpath(
            "plans", *f"{name_or_path}.yaml".split("/")
        )
        if shipped.is_file():
            return Path(str(shipped))
    return Path(name_or_path)


def matrix_plans() -> list[str]:
    """The fault matrix's plans, by name (``matrix/NAME``), sorted."""
    folder = resources.files("runcoord.harness").joinpath("plans", "matrix")
    names = [p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")]
    return [f"matrix/{n}" for n in sorted(names)]


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

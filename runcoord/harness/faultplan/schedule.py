"""A plan expanded into a timeline of concrete actions for one replay.

Random choices (times, targets) come from ``random.Random(plan.seed)`` drawn in plan order,
and never depend on which system runs: the same plan fires the same faults at the same
moments against runcoord and against the baseline. A target the system does not have (the
baseline has no executors) is kept in the timeline and marked not applicable.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runcoord.harness.faultplan import model as m


@dataclass(frozen=True, order=True)
class Action:
    at_s: float
    seq: int  # tie-break: plan order
    kind: str = field(compare=False)
    # provider_window | gateway_window (params: on, window id, rule) | kill | restart |
    # broker_down | broker_up | redis_down | redis_up | postgres_down | postgres_up |
    # duplicate | resubmit | kill_at | pause | resume | pause_watch | leader_kill | leader_up |
    # partition_cut | partition_heal
    params: Mapping[str, Any] = field(compare=False, default_factory=dict)
    label: str = field(compare=False, default="")
    applicable: bool = field(compare=False, default=True)


def _between(rng: random.Random, span: tuple[m.When, m.When], window_s: float) -> float:
    low, high = (w.seconds(window_s) for w in span)
    return rng.uniform(min(low, high), max(low, high))


def expand(plan: m.FaultPlan, window_s: float, replicas: Mapping[str, int]) -> list[Action]:
    """The plan's timeline for a send window of ``window_s`` and these replica counts."""
    rng = random.Random(plan.seed)
    out: list[Action] = []

    def add(at: float, kind: str, label: str, applicable: bool = True, **params: Any) -> None:
        out.append(Action(max(0.0, at), len(out), kind, params, label, applicable))

    for number, fault in enumerate(plan.faults):
        match fault:
            case m.ProviderLatency() | m.ProviderErrors():
                start = fault.at.seconds(window_s)
                end = start + fault.duration.seconds(window_s)
                rule: dict[str, Any] = {"spike_rate": fault.rate, "spike_ms": fault.ms}
                if isinstance(fault, m.ProviderErrors):
                    rule = {
                        "error_rate": fault.error_rate,
                        "lost_rate": fault.lost_rate,
                        "lost_mode": fault.lost_mode,
                        "spike_rate": fault.rate if fault.ms else 0.0,
                        "spike_ms": fault.ms,
                    }
                label = f"{fault.kind} {','.join(fault.endpoints)}"
                for on, at in ((True, start), (False, end)):
                    add(
                        at,
                        "provider_window",
                        label,
                        on=on,
                        window=number,
                        until=end,
                        rules={e: rule for e in fault.endpoints},
                    )
            case m.GatewayLatency() | m.SlowSuccess() | m.GatewayErrors():
                start = fault.at.seconds(window_s)
                end = start + fault.duration.seconds(window_s)
                knobs: dict[str, Any]
                if isinstance(fault, m.GatewayLatency):
                    knobs = {"latency": {"rate": fault.rate, "ms": fault.ms}}
                elif isinstance(fault, m.SlowSuccess):
                    knobs = {"slow_success": {"rate": fault.rate, "ms": fault.ms}}
                else:
                    knobs = {
                        "error_before_act": {"rate": fault.rate},
                        "drop_after_act": {"rate": fault.drop_rate},
                    }
                label = f"{fault.kind} {','.join(fault.tools or ['*'])}"
                for on, at in ((True, start), (False, end)):
                    add(
                        at,
                        "gateway_window",
                        label,
                        on=on,
                        window=number,
                        until=end,
                        tools=fault.tools,
                        knobs=knobs,
                    )
            case m.Kill():
                role, _, index = fault.target.partition(":")
                _kill(
                    add,
                    fault.at.seconds(window_s),
                    role,
                    int(index),
                    fault.restart_after,
                    window_s,
                    replicas,
                )
            case m.KillRandom():
                for _ in range(fault.count):
                    at = _between(rng, fault.between, window_s)
                    role = rng.choice(fault.roles)
                    raw_index = rng.randrange(1_000_000)
                    count = replicas.get(role, 0)
                    _kill(
                        add,
                        at,
                        role,
                        raw_index % count if count else 0,
                        fault.restart_after,
                        window_s,
                        replicas,
                    )
            case m.BrokerRestart():
                at = fault.at.seconds(window_s)
                add(
                    at,
                    "broker_down",
                    f"broker {fault.broker} {fault.mode}",
                    broker=fault.broker,
                    mode=fault.mode,
                )
                add(
                    at + fault.down_for.seconds(window_s),
                    "broker_up",
                    f"broker {fault.broker} start",
                    broker=fault.broker,
                )
            case m.RedisOutage() | m.PostgresOutage():
                what = "redis" if isinstance(fault, m.RedisOutage) else "postgres"
                at = fault.at.seconds(window_s)
                add(at, f"{what}_down", f"{what} down")
                add(at + fault.duration.seconds(window_s), f"{what}_up", f"{what} up")
            case m.DuplicateDelivery():
                for _ in range(fault.count):
                    add(
                        _between(rng, fault.between, window_s),
                        "duplicate",
                        "duplicate delivery",
                        intents=fault.intents,
                        pick=rng.random(),
                    )
            case m.ClientResubmit():
                for _ in range(fault.count):
                    add(
                        _between(rng, fault.between, window_s),
                        "resubmit",
                        "client resubmission",
                        after_ms=fault.after_ms,
                    )
            case m.KillAt():
                applicable = fault.index < replicas.get(fault.role, 0)
                add(
                    0.0 if fault.at is None else fault.at.seconds(window_s),
                    "kill_at",
                    f"kill@{fault.point}:{fault.nth} {fault.target}",
                    applicable,
                    target=fault.target,
                    spec=arm_spec(fault),
                    rearm=fault.at is not None,
                    within_s=None if fault.within is None else fault.within.seconds(window_s),
                    restart_after_s=fault.restart_after.seconds(window_s),
                )
            case m.Pause():
                applicable = fault.index < replicas.get(fault.role, 0)
                duration = fault.duration.seconds(window_s)
                if fault.at is None:
                    add(
                        0.0,
                        "pause_watch",
                        f"stop@{fault.point}:{fault.nth} {fault.target} for {duration:g} s",
                        applicable,
                        target=fault.target,
                        spec=arm_spec(fault),
                        duration_s=duration,
                        within_s=None if fault.within is None else fault.within.seconds(window_s),
                    )
                else:
                    at = fault.at.seconds(window_s)
                    add(at, "pause", f"SIGSTOP {fault.target}", applicable, target=fault.target)
                    add(
                        at + duration,
                        "resume",
                        f"SIGCONT {fault.target}",
                        applicable,
                        target=fault.target,
                    )
            case m.LeaderKill():
                at = fault.at.seconds(window_s)
                where = f"{fault.topic}[{fault.partition}]"
                add(
                    at,
                    "leader_kill",
                    f"kill -9 the leader of {where}",
                    window=number,
                    topic=fault.topic,
                    partition=fault.partition,
                )
                add(
                    at + fault.down_for.seconds(window_s),
                    "leader_up",
                    f"restart the old leader of {where}",
                    window=number,
                )
            case m.Partition():
                role, _, index = fault.target.partition(":")
                applicable = int(index) < replicas.get(role, 0)
                at = fault.at.seconds(window_s)
                add(
                    at,
                    "partition_cut",
                    f"partition {fault.target} from the brokers ({fault.mode})",
                    applicable,
                    target=fault.target,
                    mode=fault.mode,
                )
                add(
                    at + fault.duration.seconds(window_s),
                    "partition_heal",
                    f"heal {fault.target}",
                    applicable,
                    target=fault.target,
                )
    return sorted(out)


def arm_spec(fault: m.KillAt | m.Pause) -> str:
    """The RUNCOORD_FAULT_AT value that makes the replica fault itself (runcoord/faults.py)."""
    action = "kill" if isinstance(fault, m.KillAt) else "stop"
    return f"{action}@{fault.point}:{fault.nth}"


def armed_at_start(plan: m.FaultPlan) -> dict[str, str]:
    """Replica target -> RUNCOORD_FAULT_AT for the replicas the plan arms from their start."""
    out: dict[str, str] = {}
    for fault in plan.faults:
        if isinstance(fault, m.KillAt | m.Pause) and fault.point is not None and fault.at is None:
            out[fault.target] = arm_spec(fault)
    return out


def partitioned(plan: m.FaultPlan) -> set[str]:
    """Replica targets the plan partitions (they run in a network namespace of their own)."""
    return {f.target for f in plan.faults if isinstance(f, m.Partition)}


def _kill(
    add: Any,
    at: float,
    role: str,
    index: int,
    restart_after: m.When | None,
    window_s: float,
    replicas: Mapping[str, int],
) -> None:
    target = f"{role}:{index}"
    applicable = index < replicas.get(role, 0)
    add(at, "kill", f"kill -9 {target}", applicable, target=target)
    if restart_after is not None:
        add(
            at + restart_after.seconds(window_s),
            "restart",
            f"restart {target}",
            applicable,
            target=target,
        )

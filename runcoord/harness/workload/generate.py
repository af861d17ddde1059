"""The workload generator: N turns shaped like the seeds' production traces.

Shape (DESIGN.md, "Harness (evaluation)"): 55% of tool calls read-only, 45% write; 0-4 tool
calls per turn with median 1; 1-3 model steps per turn (tool steps, then the final answer);
several tenants with the write tools tools.yaml enables for each; several turns per
conversation, one after the other; model latencies from a configurable distribution.
Everything comes from one ``random.Random(seed)``, drawn in a fixed order, so a seed is a
trace.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from runcoord.harness.workload.latency import DEFAULT_SPEC, LatencyDist, parse_latency
from runcoord.harness.workload.toolargs import FACTORIES, WEIGHTS, user_input
from runcoord.harness.workload.trace import (
    APPROVAL_ARGUMENT,
    TraceApproval,
    TraceCall,
    TraceFinal,
    TraceScript,
    TraceStep,
    TraceTurn,
)
from runcoord.registry import Registry

# P(k tool calls in a turn), k = 0..4: median 1, mean 1.43.
CALLS_PER_TURN: tuple[float, ...] = (0.25, 0.35, 0.20, 0.12, 0.08)
WRITE_SHARE = 0.45
TENANT_WEIGHTS: dict[str, float] = {"t1": 30, "t2": 25, "t3": 20, "t4": 15, "t5": 10}
MAX_TURNS_PER_CONVERSATION = 6


@dataclass(frozen=True)
class GeneratorConfig:
    turns: int
    seed: int
    rate: float = 20.0  # nominal turns per second of the trace's offsets
    latency: LatencyDist = field(default_factory=lambda: parse_latency(DEFAULT_SPEC))
    tenants: dict[str, float] = field(default_factory=lambda: dict(TENANT_WEIGHTS))
    repeat_share: float = 0.02  # write calls that legitimately repeat an earlier one
    resubmit_share: float = 0.0  # turns the client sends twice
    think_ms: tuple[float, float] = (1000.0, 6000.0)  # user pause between turns


class _Catalog:
    """Tools by kind that the generator can make arguments for, and who may call them."""

    def __init__(self, registry: Registry) -> None:
        known = {n: t for n, t in registry.tools.items() if n in FACTORIES}
        self.reads = sorted(n for n, t in known.items() if not t.write)
        self.writes = sorted(n for n, t in known.items() if t.write)
        self._tenants = {n: set(t.tenants) for n, t in known.items()}
        if not self.reads:
            raise ValueError("the tool registry has no read tool the generator knows")

    def writes_for(self, tenant: str) -> list[str]:
        return [n for n in self.writes if tenant in self._tenants[n]]


def _weighted(rng: random.Random, names: Sequence[str]) -> str:
    return rng.choices(list(names), [WEIGHTS[n] for n in names])[0]


def _split(rng: random.Random, calls: list[TraceCall]) -> list[list[TraceCall]]:
    """One tool step for one call; one or two for more (so 1-3 model steps with the final)."""
    if len(calls) >= 2 and rng.random() < 0.5:
        cut = rng.randint(1, len(calls) - 1)
        return [calls[:cut], calls[cut:]]
    return [calls] if calls else []


class Generator:
    def __init__(self, config: GeneratorConfig, registry: Registry) -> None:
        self.config = config
        self.catalog = _Catalog(registry)
        self.rng = random.Random(config.seed)
        weights = config.tenants
        capable = sum(w for t, w in weights.items() if self.catalog.writes_for(t))
        if capable <= 0:
            raise ValueError("no tenant may call any write tool")
        # Read-only tenants make reads only; the others write a little more often, so the
        # whole trace keeps the 55/45 mix.
        self.p_write = min(1.0, WRITE_SHARE * sum(weights.values()) / capable)

    def _call(self, tenant: str, customer: str) -> TraceCall:
        writes = self.catalog.writes_for(tenant)
        if writes and self.rng.random() < self.p_write:
            name = _weighted(self.rng, writes)
        else:
            name = _weighted(self.rng, self.catalog.reads)
        return TraceCall(name=name, arguments=FACTORIES[name](self.rng, customer))

    def _turn_script(
        self, tenant: str, customer: str, earlier: list[TraceCall]
    ) -> tuple[TraceScript, str | None]:
        rng, cfg = self.rng, self.config
        count = rng.choices(range(len(CALLS_PER_TURN)), CALLS_PER_TURN)[0]
        calls = [self._call(tenant, customer) for _ in range(count)]
        for i, call in enumerate(calls):
            writes = [c for c in earlier if c.name in self.catalog.writes]
            if call.name in self.catalog.writes and writes and rng.random() < cfg.repeat_share:
                calls[i] = rng.choice(writes)  # "send that again": a legitimate repeat
        steps = [
            TraceStep(tool_calls=group, latency_ms=cfg.latency.draw(rng))
            for group in _split(rng, calls)
        ]
        final = TraceFinal(message="Done.", latency_ms=cfg.latency.draw(rng))
        earlier.extend(calls)
        return TraceScript(steps=steps, final=final), calls[0].name if calls else None

    def turns(self) -> list[TraceTurn]:
        rng, cfg = self.rng, self.config
        p_more = 0.5
        mean_len = sum(p_more**k for k in range(MAX_TURNS_PER_CONVERSATION))
        conversation_rate = cfg.rate / mean_len  # conversations starting per second
        drafts: list[tuple[float, str, str, str, TraceScript, int | None]] = []
        start_s = 0.0
        number = 0
        tenants, weights = list(cfg.tenants), list(cfg.tenants.values())
        # Conversations start as a Poisson process until their first turns alone pass the
        # N-th turn's time; later turns of earlier conversations fill in between.
        check_at = cfg.turns / cfg.rate
        while True:
            start_s += rng.expovariate(conversation_rate)
            if start_s >= check_at and len(drafts) >= cfg.turns:
                nth_ms = heapq.nsmallest(cfg.turns, (d[0] for d in drafts))[-1]
                if start_s * 1000 > nth_ms:
                    break
                check_at = start_s + 5.0
            number += 1
            conversation = f"c{number:06d}"
            tenant = rng.choices(tenants, weights)[0]
            customer = f"cus_{rng.randrange(1000, 100000)}"
            earlier: list[TraceCall] = []
            at_ms = start_s * 1000
            for k in range(MAX_TURNS_PER_CONVERSATION):
                if k > 0 and rng.random() >= p_more:
                    break
                script, first_tool = self._turn_script(tenant, customer, earlier)
                text = user_input(rng, first_tool)
                resubmit = (
                    int(rng.uniform(500, 3000)) if rng.random() < cfg.resubmit_share else None
                )
                drafts.append((at_ms, conversation, tenant, text, script, resubmit))
                at_ms += script.model_ms() + rng.uniform(*cfg.think_ms)
        drafts.sort(key=lambda d: d[0])
        width = max(6, math.ceil(math.log10(cfg.turns + 1)))
        return [
            TraceTurn(
                turn_id=f"u{i + 1:0{width}d}",
                tenant=tenant,
                conversation=conversation,
                offset_ms=int(at_ms),
                input=text,
                script=script,
                resubmit_after_ms=resubmit,
            )
            for i, (at_ms, conversation, tenant, text, script, resubmit) in enumerate(
                drafts[: cfg.turns]
            )
        ]


ApproverDecision = Literal["approve", "reject", "none"]
APPROVAL_DECISIONS: tuple[ApproverDecision, ...] = ("approve", "reject", "none")
APPROVAL_WEIGHTS = (0.7, 0.2, 0.1)


def with_approvals(
    trace: list[TraceTurn], fraction: float, seed: int, write_tools: set[str]
) -> list[TraceTurn]:
    """``trace`` with ``fraction`` of its write calls needing approval: their arguments carry
    ``approval_required: true`` and each gets a simulated approver's script (mostly approve,
    some reject, some never decided; some decisions sent again, some contradicted). Drawn from
    a generator of its own, so the trace's other draws stay as the seed made them."""
    if not 0 <= fraction <= 1:
        raise ValueError("--approvals must be between 0 and 1")
    rng = random.Random(f"approvals/{seed}")

    def mark(call: TraceCall) -> TraceCall:
        if call.name not in write_tools or rng.random() >= fraction:
            return call
        approval = TraceApproval(
            decision=rng.choices(APPROVAL_DECISIONS, APPROVAL_WEIGHTS)[0],
            after_ms=int(rng.uniform(100, 3000)),
            duplicates=rng.choice((0, 0, 1, 2)),
            conflicting=rng.random() < 0.15,
        )
        arguments = {**call.arguments, APPROVAL_ARGUMENT: True}
        return call.model_copy(update={"arguments": arguments, "approval": approval})

    out = []
    for turn in trace:
        steps = [
            step.model_copy(update={"tool_calls": [mark(c) for c in step.tool_calls]})
            for step in turn.script.steps
        ]
        script = turn.script.model_copy(update={"steps": steps})
        out.append(turn.model_copy(update={"script": script}))
    return out


def generate(config: GeneratorConfig, registry: Registry) -> list[TraceTurn]:
    if config.turns < 1:
        raise ValueError("--turns must be at least 1")
    if config.rate <= 0:
        raise ValueError("--rate must be > 0")
    return Generator(config, registry).turns()

"""``runcoord workload generate``: write a trace (JSONL, format in runcoord/harness/README.md)."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from runcoord.config import load
from runcoord.errors import ConfigError
from runcoord.harness.workload.generate import GeneratorConfig, generate, with_approvals
from runcoord.harness.workload.latency import DEFAULT_SPEC, parse_latency
from runcoord.harness.workload.trace import TraceTurn, write_trace
from runcoord.registry import load_registry

app = typer.Typer(no_args_is_help=True)
_Opt = typer.Option


@app.command("generate")
def generate_cmd(
    turns: Annotated[int, _Opt(help="Turns to generate.")] = 2000,
    seed: Annotated[int, _Opt(help="Random seed: one seed, one trace.")] = 7,
    out: Annotated[Path, _Opt(help="Where to write the trace (JSONL).")] = Path("trace.jsonl"),
    rate: Annotated[float, _Opt(help="Nominal turns per second of the offsets.")] = 20.0,
    latency: Annotated[
        str,
        _Opt(
            help="Model latency per step: lognormal:median=..,sigma=.. | exponential:mean=.. "
            "| fixed:ms=.. (+ min=, max=)."
        ),
    ] = DEFAULT_SPEC,
    repeat_share: Annotated[
        float, _Opt(help="Share of write calls that legitimately repeat an earlier one.")
    ] = 0.02,
    resubmit_share: Annotated[
        float, _Opt(help="Share of turns marked for a client resubmission.")
    ] = 0.0,
    tools: Annotated[
        Path | None, _Opt(help="The tool registry (default: RUNCOORD_TOOLS_FILE).")
    ] = None,
    approvals: Annotated[
        float,
        _Opt(
            help="Share of write calls that need a person's approval, each with a simulated "
            "approver's script (approve / reject / no decision)."
        ),
    ] = 0.0,
) -> None:
    """Generate a synthetic workload trace shaped like production (deterministic per seed)."""
    try:
        config = GeneratorConfig(
            turns=turns,
            seed=seed,
            rate=rate,
            latency=parse_latency(latency),
            repeat_share=repeat_share,
            resubmit_share=resubmit_share,
        )
        registry = load_registry(tools or load().tools_file)
        trace = generate(config, registry)
        if approvals:
            writes = {n for n, t in registry.tools.items() if t.write}
            trace = with_approvals(trace, approvals, seed, writes)
    except (ValueError, ConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    write_trace(out, trace)
    typer.echo(f"wrote {len(trace)} turns to {out}")
    typer.echo(summary(trace, {n for n, t in registry.tools.items() if t.write}))


def summary(trace: list[TraceTurn], write_tools: set[str]) -> str:
    calls = [c for t in trace for c in t.script.calls()]
    per_turn = [len(t.script.calls()) for t in trace]
    tenants = Counter(t.tenant for t in trace)
    conversations = len({t.conversation for t in trace})
    span_s = (trace[-1].offset_ms - trace[0].offset_ms) / 1000 if len(trace) > 1 else 0.0
    writes = sum(1 for c in calls if c.name in write_tools)
    held = Counter(c.approval.decision for c in calls if c.approval is not None)
    approvals = (
        f"; {sum(held.values())} need approval ("
        + ", ".join(f"{d} {n}" for d, n in sorted(held.items()))
        + ")"
        if held
        else ""
    )
    return (
        f"{conversations} conversations over {span_s:.0f} s; tool calls per turn: median "
        f"{statistics.median(per_turn):g}, mean {statistics.mean(per_turn):.2f}; "
        f"{writes / max(1, len(calls)):.0%} of {len(calls)} calls write; tenants "
        + ", ".join(f"{t} {n}" for t, n in sorted(tenants.items()))
        + approvals
    )

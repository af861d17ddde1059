"""(c) Time from a run entering requires_action to its tool request reaching the gateway,
polling vs streaming (runcoord, Responses API, no faults).

One trace, replayed twice through runcoord: once with the provider executor watching
responses by polling (``--observe poll``), once by their event streams (``--observe
stream``). Per step, from the evidence only:

- entered requires_action: the simulated provider's ``completed_at`` of the response that
  completed with function calls (``sim_records.json``, to the millisecond);
- reached the gateway: the first arrival of any of that step's tool calls at the sandbox
  gateway (``gateway_arrivals.jsonl``, reads included).

The difference is the coordinator noticing the step (the watch), journaling it, dispatching
the tool intent and the tool executor calling out. Steps whose calls never reach the gateway
(tools refused by policy, answered without a call) are counted apart. CPU is what the
provider executor replicas used over the replay (``system.json``), per turn.

    .venv/bin/python bench/observe_latency.py --turns 200 --rate 10 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runcoord.config import load
from runcoord.harness.faultplan import load_plan
from runcoord.harness.replay.cli import unwind_on_signals
from runcoord.harness.replay.run import ReplayConfig, replay
from runcoord.harness.report.data import read_jsonl
from runcoord.harness.report.figures import percentile
from runcoord.harness.workload.generate import GeneratorConfig, generate
from runcoord.harness.workload.trace import write_trace
from runcoord.registry import load_registry

MODES = ("poll", "stream")


@dataclass(frozen=True)
class Dispatch:
    """One replay's figures."""

    latencies_ms: list[float]  # per step that reached the gateway
    unreached: int  # steps none of whose calls reached the gateway
    turns: int
    provider_cpu_s: float  # the provider executor replicas
    sim_cpu_s: float  # the simulated provider (it serves the polls, or the streams)

    def pct(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)


def step_latencies(
    records: dict[str, Any], arrivals: list[dict[str, Any]]
) -> tuple[list[float], int]:
    """Per step (a response completed with function calls): ms from its completion to the
    first arrival of one of its calls at the gateway; and how many steps had none."""
    first: dict[str, float] = {}
    for arrival in arrivals:
        call = arrival.get("tool_call_id")
        if call is not None and (call not in first or arrival["at"] < first[call]):
            first[call] = float(arrival["at"])
    latencies: list[float] = []
    unreached = 0
    for response in records["runs"]:
        calls = response.get("call_ids") or []
        if not calls or response.get("completed_at") is None:
            continue
        reached = [first[c] for c in calls if c in first]
        if not reached:
            unreached += 1
            continue
        latencies.append((min(reached) - float(response["completed_at"])) * 1000)
    return latencies, unreached


def analyse(folder: Path, turns: int) -> Dispatch:
    records = json.loads((folder / "sim_records.json").read_text())
    latencies, unreached = step_latencies(records, read_jsonl(folder / "gateway_arrivals.jsonl"))
    cpu: dict[str, float] = json.loads((folder / "system.json").read_text())["cpu_s"]
    provider = sum(v for k, v in cpu.items() if k.startswith("exec-provider-"))
    return Dispatch(latencies, unreached, turns, provider, cpu.get("sim-provider", 0.0))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def measure(args: argparse.Namespace) -> tuple[dict[str, Dispatch], list[float]]:
    """Each mode's figures, and the load average (5 min) after each replay."""
    settings = load()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        trace = generate(
            GeneratorConfig(turns=args.turns, seed=args.seed, rate=args.rate),
            load_registry(settings.tools_file),
        )
        write_trace(folder / "trace.jsonl", trace)
        results: dict[str, Dispatch] = {}
        loads: list[float] = []
        for mode in MODES:
            out = folder / mode
            config = ReplayConfig(
                trace_path=folder / "trace.jsonl", plan=load_plan("none"), out=out,
                provider="responses", observe=mode, systems=("runcoord",), rate=args.rate,
                coordinators=2, executors=1, replay_id=f"bench-c-{mode}-{int(time.time())}",
                split_executors=True,  # the provider executor's own CPU is the figure
            )  # fmt: skip
            replay(config, trace, settings, lambda _: None)
            results[mode] = analyse(out / "runcoord", len(trace))
            # A shared 2-core machine: the load says how much the figures are the neighbours'.
            loads.append(os.getloadavg()[1])
    return results, loads


def as_json(
    args: argparse.Namespace, results: dict[str, Dispatch], loads: list[float]
) -> dict[str, Any]:
    def pct(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    poll, stream = results["poll"], results["stream"]
    return {
        "turns": args.turns,
        "rate": args.rate,
        "seed": args.seed,
        "modes": {
            mode: {
                "steps": len(r.latencies_ms),
                "p50_ms": pct(r.pct(50)),
                "p95_ms": pct(r.pct(95)),
                "p99_ms": pct(r.pct(99)),
                "unreached": r.unreached,
                "provider_exec_cpu_ms_per_turn": round(1000 * r.provider_cpu_s / r.turns, 1),
                "sim_cpu_ms_per_turn": round(1000 * r.sim_cpu_s / r.turns, 1),
                "load_avg_5min": round(load, 2),
            }
            for (mode, r), load in zip(results.items(), loads, strict=True)
        },
        "poll_over_stream": {f"p{q}": ratio(poll.pct(q), stream.pct(q)) for q in (50, 95, 99)},
        "provider_cpu_poll_over_stream": ratio(poll.provider_cpu_s, stream.provider_cpu_s),
    }


def table(args: argparse.Namespace, results: dict[str, Dispatch], loads: list[float]) -> None:
    poll, stream = results["poll"], results["stream"]
    print(
        f"runcoord, Responses API, {args.turns} turns at {args.rate:g}/s (seed {args.seed}), "
        "no faults: requires_action -> first tool request at the gateway"
    )
    after = ", ".join(f"{mode} {load:.1f}" for mode, load in zip(MODES, loads, strict=True))
    print(f"load average (5 min) after each replay: {after}")
    print(
        "observe  steps  p50 ms  p95 ms  p99 ms  unreached  "
        "provider-exec CPU ms/turn  sim CPU ms/turn"
    )
    for mode, r in results.items():
        print(
            f"{mode:7}  {len(r.latencies_ms):5}  {_ms(r.pct(50)):>6}  {_ms(r.pct(95)):>6}  "
            f"{_ms(r.pct(99)):>6}  {r.unreached:9}  {1000 * r.provider_cpu_s / r.turns:25.1f}  "
            f"{1000 * r.sim_cpu_s / r.turns:15.1f}"
        )
    ratios = []
    for q in (50, 95, 99):
        p, s = poll.pct(q), stream.pct(q)
        ratios.append(f"p{q} {p / s:.1f}x" if p is not None and s else f"p{q} -")
    print("poll / stream: " + ", ".join(ratios))
    if stream.provider_cpu_s > 0:
        cpu_ratio = poll.provider_cpu_s / stream.provider_cpu_s
        print(f"provider executor CPU, poll / stream: {cpu_ratio:.2f}x")


def main() -> None:
    unwind_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="turns per second")
    parser.add_argument("--seed", type=int, default=33)
    parser.add_argument("--out", type=Path, default=None, help="keep the evidence here")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    # With --json stdout carries the JSON alone; the table goes to stderr.
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        results, loads = measure(args)
        table(args, results, loads)
    if args.json:
        print(json.dumps(as_json(args, results, loads), indent=2))


if __name__ == "__main__":
    main()

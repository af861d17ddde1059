"""(d) A long trace (50k turns by default) through runcoord: turns/s and p95 turn latency,
with the coordinator's overhead (measured end to end) and without it (the trace's own
model time: what a zero-overhead coordinator with instant tools would give)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import Any

from runcoord.config import load
from runcoord.harness.faultplan import load_plan
from runcoord.harness.replay.cli import unwind_on_signals
from runcoord.harness.replay.run import QUEUE_MS, ReplayConfig, replay
from runcoord.harness.report.build import build_report
from runcoord.harness.report.data import load_replay
from runcoord.harness.report.figures import percentile
from runcoord.harness.workload.generate import GeneratorConfig, generate
from runcoord.harness.workload.trace import write_trace
from runcoord.registry import load_registry


def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = load()
    out = args.out or settings.state_dir / "bench" / f"full-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    trace = generate(
        GeneratorConfig(turns=args.turns, seed=50, rate=args.rate),
        load_registry(settings.tools_file),
    )
    write_trace(out / "trace.jsonl", trace)
    config = ReplayConfig(
        trace_path=out / "trace.jsonl", plan=load_plan(args.faults), out=out / "replay",
        systems=(args.system,), rate=args.rate, coordinators=2, executors=1,
    )  # fmt: skip
    started = time.monotonic()
    replay(config, trace, settings, print)
    took = time.monotonic() - started
    data = load_replay(out / "replay")
    f = build_report(data)["systems"][args.system]
    runs = data.systems[args.system].runs
    finished = sorted(r.finished_at for r in runs if r.finished_at is not None)
    first = min(r.sent_at for r in runs)
    intrinsic = [(t.script.model_ms() + QUEUE_MS * (len(t.script.steps) + 1)) / 1000 for t in trace]
    # The shape of bench/full50k_chaos.json: the replay's own report under "figures".
    return {
        "turns": args.turns,
        "faults": args.faults,
        "system": args.system,
        "offered_turns_per_s": args.rate,
        "took_s": round(took, 1),
        "finished_turns_per_s": round(len(finished) / (finished[-1] - first), 2),
        "without_coordinator_p95_turn_s": percentile(intrinsic, 95),
        "evidence": str(out),
        "figures": f,
    }


def table(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    return [
        f"{r['turns']} turns, plan {r['faults']}, offered {r['offered_turns_per_s']:g} turns/s; "
        f"took {r['took_s']:.0f} s; evidence in {r['evidence']}",
        f"with the coordinator:    {r['finished_turns_per_s']:.1f} turns/s finished, p95 turn "
        f"{f['p95_turn_s']} s, terminal rate {f['terminal_rate']}, observed/expected "
        f"{f['observed_expected_ratio']}, system duplicates {f['system_duplicates']}, "
        f"stalls {f['coordinator_stalls']}",
        f"without its overhead:    {r['offered_turns_per_s']:g} turns/s offered, p95 turn "
        f"{r['without_coordinator_p95_turn_s']:.3f} s (the trace's model time)",
    ]


def main() -> None:
    unwind_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--faults", default="none")
    parser.add_argument("--system", default="runcoord")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    # With --json stdout carries the JSON alone; the replay's progress goes to stderr.
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        result = measure(args)
        print("\n".join(table(result)))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""(d) A long trace (50k turns by default) through runcoord: turns/s and p95 turn latency,
with the coordinator's overhead (measured end to end) and without it (the trace's own
model time: what a zero-overhead coordinator with instant tools would give)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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


def main() -> None:
    unwind_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--faults", default="none")
    parser.add_argument("--system", default="runcoord")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = load()
    out = args.out or settings.state_dir / "bench" / f"full-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    trace = generate(
        GeneratorConfig(turns=args.turns, seed=50, rate=args.rate),
        load_registry(load().tools_file),
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
    print(
        f"{args.turns} turns, plan {args.faults}, offered {args.rate:g} turns/s; took {took:.0f} s"
    )
    print(
        f"with the coordinator:    {len(finished) / (finished[-1] - first):.1f} turns/s "
        f"finished, p95 turn {f['p95_turn_s']} s, terminal rate {f['terminal_rate']}, "
        f"observed/expected {f['observed_expected_ratio']}, "
        f"system duplicates {f['system_duplicates']}, stalls {f['coordinator_stalls']}"
    )
    print(
        f"without its overhead:    {args.rate:g} turns/s offered, p95 turn "
        f"{percentile(intrinsic, 95):.3f} s (the trace's model time)"
    )


if __name__ == "__main__":
    main()

"""(b) Coordinator-added latency per tool step, p50/p99, at fixed turn rates (runcoord only).

A step's time in requires_action (from the provider's records) is everything between the
model asking for tools and the provider accepting the outputs: the coordinator noticing,
dispatching, the tool call, recording, submitting. The trace has fixed model latencies and
no faults, so what varies with the rate is the coordinator's share.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from runcoord.config import load
from runcoord.harness.faultplan import load_plan
from runcoord.harness.replay.cli import unwind_on_signals
from runcoord.harness.replay.run import ReplayConfig, replay
from runcoord.harness.report.build import build_report
from runcoord.harness.report.data import load_replay
from runcoord.harness.workload.generate import GeneratorConfig, generate
from runcoord.harness.workload.latency import parse_latency
from runcoord.harness.workload.trace import write_trace
from runcoord.registry import load_registry


def main() -> None:
    unwind_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="5,20,40")
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--system", default="runcoord")
    args = parser.parse_args()
    settings = load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trace = generate(
            GeneratorConfig(turns=args.turns, seed=21, latency=parse_latency("fixed:ms=200")),
            load_registry(load().tools_file),
        )
        write_trace(folder / "trace.jsonl", trace)
        for rate in (float(r) for r in args.rates.split(",")):
            out = folder / f"rate-{rate:g}"
            config = ReplayConfig(
                trace_path=folder / "trace.jsonl", plan=load_plan("none"), out=out,
                systems=(args.system,), rate=rate, coordinators=2, executors=1,
                replay_id=f"bench-b-{int(time.time())}",
            )  # fmt: skip
            replay(config, trace, settings, lambda _: None)
            f = build_report(load_replay(out))["systems"][args.system]
            rows.append((rate, f))
    print(f"{args.system}, {args.turns} turns per rate, fixed 200 ms model latency, no faults")
    print("rate/s  step p50 ms  step p99 ms  added/turn p50 ms  added/turn p99 ms  terminal")
    for rate, f in rows:
        print(
            f"{rate:6g}  {f['step_wait_p50_ms']:11.0f}  {f['step_wait_p99_ms']:11.0f}  "
            f"{f['coordinator_added_p50_ms']:17.0f}  {f['coordinator_added_p99_ms']:17.0f}  "
            f"{f['terminal_rate']:.4f}"
        )


if __name__ == "__main__":
    main()

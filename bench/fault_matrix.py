"""(e) The fault matrix: every named scenario (runcoord/harness/plans/matrix/*.yaml) replayed
against runcoord ``--repeat`` times, each on a fresh trace seed, judged from the evidence
(runcoord/harness/faultplan/matrix.py says how each figure is counted): per run and per
scenario, runs, expected and observed writes, excess (must be 0), missing writes by cause
(unexplained must be 0), stalls (must be 0), inputs lost (must be 0), PASS/FAIL.

One replay at a time. Scenarios whose plan asks for its own servers (``stack``: a 1- or
3-broker Kafka cluster, PostgreSQL, Redis) get them under .state/matrix/stack/, on free
ports, started once for consecutive scenarios that share them; the shared stack is never
taken down. Writes the table as it goes (.state/bench/matrix-<stamp>/matrix.md and
matrix.json) and exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext, redirect_stdout
from pathlib import Path

from runcoord.config import load
from runcoord.harness.faultplan.matrix import (
    DEFAULT_RATE,
    DEFAULT_TURNS,
    MatrixRun,
    as_json,
    markdown,
    run_matrix,
    scenarios,
)
from runcoord.harness.replay.cli import unwind_on_signals


def main() -> None:
    unwind_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="these scenarios")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--turns", type=int, default=DEFAULT_TURNS, help="turns per trace")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="turns per second")
    parser.add_argument(
        "--seed", type=int, default=None, help="first trace seed (default: from the clock)"
    )
    parser.add_argument("--budget", type=float, default=120.0, help="terminal budget per turn, s")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--list", action="store_true", help="print the scenarios and exit")
    parser.add_argument("--json", action="store_true", help="print matrix.json's data to stdout")
    args = parser.parse_args()
    try:
        names = scenarios(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        print("\n".join(names))
        return
    settings = load()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or settings.state_dir / "bench" / f"matrix-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    meta = {
        "started": stamp,
        "scenarios": names,
        "repeat": args.repeat,
        "turns": args.turns,
        "rate": args.rate,
        "first_seed": seed,
        "system": "runcoord",
    }
    total = len(names) * args.repeat
    rows: list[MatrixRun] = []
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:7.0f} s] {line}", flush=True)

    def on_run(row: MatrixRun) -> None:
        rows.append(row)
        say(
            f"{row.scenario} run {row.run}: {row.verdict} in {row.took_s:.0f} s "
            f"({len(rows)}/{total}); runs {row.runs_sent}, writes {row.observed_writes}/"
            f"{row.expected_writes}, excess {row.excess}, stalls {row.stalls}, inputs lost "
            f"{row.inputs_lost}{'; ' + '; '.join(row.reasons) if row.reasons else ''}"
        )
        save(out, rows, meta, time.monotonic() - started)

    # With --json stdout carries the JSON alone (matrix.json's content); the rest goes to stderr.
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        say(
            f"{len(names)} scenario(s) x {args.repeat}, {args.turns} turns at "
            f"{args.rate:g}/s; {out}"
        )
        try:
            run_matrix(
                names,
                repeat=args.repeat,
                turns=args.turns,
                rate=args.rate,
                seed=seed,
                out=out,
                settings=settings,
                say=say,
                on_run=on_run,
                budget_s=args.budget,
            )
        finally:
            took = time.monotonic() - started
            save(out, rows, meta, took)
            print()
            print(markdown(rows))
            print(f"table: {out / 'matrix.md'}; data: {out / 'matrix.json'}")
    if args.json:
        print(json.dumps(as_json(rows, **meta, took_s=round(took, 1)), indent=2, default=str))
    failed = [r for r in rows if r.verdict != "PASS"]
    if failed or len(rows) < total:
        sys.exit(1)


def save(out: Path, rows: list[MatrixRun], meta: dict[str, object], took: float) -> None:
    data = as_json(rows, **meta, took_s=round(took, 1))
    (out / "matrix.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "matrix.md").write_text(
        f"# Fault matrix {meta['started']}\n\n{len(rows)} run(s), {meta['turns']} turns each at "
        f"{meta['rate']}/s, first seed {meta['first_seed']}; {took:.0f} s in all.\n\n"
        + markdown(rows)
    )


if __name__ == "__main__":
    main()

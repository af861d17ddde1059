"""(b) Coordinator-added latency per tool step, p50/p99, at fixed turn rates.

A step's time in requires_action (from the provider's records) is everything between the
model asking for tools and the provider accepting the outputs: the coordinator noticing,
dispatching, the tool call, recording, submitting. The trace has a fixed model latency
(``--latency``) and, by default, no faults, so what varies with the rate is the system's
share. ``--system both`` replays the trace through runcoord and the baseline in one run.

Per rate and system: the step's wait and the turn's added time (the report's figures,
runcoord/harness/report/figures.py), the step's wait cut into hops (``step_hops_ms``, runcoord
only: the baseline keeps no journal), CPU per turn by process, and the time a tool step
adds beyond the tool's own time at the gateway.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import Any

from runcoord.config import load
from runcoord.domain.events import JournalEvent
from runcoord.errors import ConfigError
from runcoord.harness.faultplan import load_plan
from runcoord.harness.replay.cli import unwind_on_signals
from runcoord.harness.replay.run import ReplayConfig, replay
from runcoord.harness.report.build import build_report
from runcoord.harness.report.data import ReplayData, load_replay
from runcoord.harness.report.figures import added_by_turn, percentile
from runcoord.harness.report.hops import step_hops
from runcoord.harness.report.steps import StepWait, analyse
from runcoord.harness.workload.generate import GeneratorConfig, generate
from runcoord.harness.workload.latency import parse_latency
from runcoord.harness.workload.trace import write_trace
from runcoord.registry import load_registry

SYSTEMS = {"runcoord": ("runcoord",), "baseline": ("baseline",), "both": ("runcoord", "baseline")}
# The report's figures kept per rate and system, as the report names them.
REPORT_KEYS = (
    "steps",
    "step_wait_p50_ms",
    "step_wait_p99_ms",
    "coordinator_added_p50_ms",
    "coordinator_added_p99_ms",
    "terminal_rate",
    "no_stall_rate",
    "step_hops_ms",
    "cpu_ms_per_turn",
    "provider_requests_per_turn",
)


def added_per_tool_step_ms(data: ReplayData, system: str) -> list[float] | None:
    """Per answered step whose tool time is on record: its wait minus the tool's own time.
    None without a journal and ledger (the baseline): its tool time is not on record."""
    d = data.systems[system]
    if d.journal is None or d.ledger is None:
        return None
    # The steps as the report's figures read them (figures.system_figures).
    queue_ms = float(data.protocol.get("queue_ms", 20.0))
    ended_at = float(d.info.get("ended_at") or max([r.sent_at for r in d.runs], default=0.0))
    turn_of_run = {r.run_id: data.trace[r.turn_id] for r in d.runs}
    finished = {r.run_id: r.finished_at for r in d.runs if r.finished_at is not None}
    waits, _ = analyse(d.sim_records, turn_of_run, queue_ms, ended_at, finished)
    return tool_step_added_ms(waits, d.journal, d.ledger, d.arrivals)


def tool_step_added_ms(
    waits: Sequence[StepWait],
    journal: Mapping[str, Sequence[JournalEvent]],
    ledger: Iterable[Mapping[str, Any]],
    arrivals: Iterable[Mapping[str, Any]],
) -> list[float]:
    """Each answered step's wait minus its own ``tool`` hop (report/hops.py: the first
    request at the gateway to the last call done), in ms; steps without that hop on record
    (no call reached the gateway) are left out.

    Subtracting the hops' p50 from the waits' p50 would not do: the two come from
    different steps. So each step's hops are taken on their own, through the report's
    ``step_hops`` fed with that step's run only (the whole evidence for every step would
    make this quadratic in the trace's length).
    """
    rows: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in ledger:
        rows[str(row.get("run_id"))].append(row)
    arrived: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for arrival in arrivals:
        arrived[str(arrival.get("run_id"))].append(arrival)
    added: list[float] = []
    for w in waits:
        if not w.answered:
            continue
        run = w.run_id
        # No submissions: they only end the last hop, and the tool hop is all this needs.
        hops = step_hops([w], {run: journal.get(run, [])}, rows[run], arrived[run], [])
        if hops["tool"]:
            added.append((w.wait_s - hops["tool"][0]) * 1000)
    return added


def figures(data: ReplayData, report: dict[str, Any], system: str) -> dict[str, Any]:
    """One system's figures at one rate; ``report`` is the replay's (build_report)."""
    out = {key: report["systems"][system][key] for key in REPORT_KEYS}
    added = added_per_tool_step_ms(data, system)
    for q in (50, 99):
        value = percentile(added or [], q)
        out[f"added_per_tool_step_p{q}_ms"] = None if value is None else round(value, 1)
    out["added_per_tool_step_n"] = None if added is None else len(added)  # None: not on record
    out["backlog"] = backlog(data, system)
    return out


def backlog(data: ReplayData, system: str) -> dict[str, float | None]:
    """Whether the system keeps up: the p50 time turns took beyond their model time, for the
    first and the last third of the turns as sent. A backlog that grows shows as a last
    third well above the first; one that keeps up, as two alike."""
    queue_ms = float(data.protocol.get("queue_ms", 20.0))
    added = [ms for _, ms in added_by_turn(data.systems[system], data.trace, queue_ms)]
    third = len(added) // 3
    first, last = percentile(added[:third], 50), percentile(added[-third:] if third else [], 50)
    return {
        "first_third_p50_ms": None if first is None else round(first, 1),
        "last_third_p50_ms": None if last is None else round(last, 1),
    }


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['turns']} turns per rate, model latency {result['latency']}, "
        f"faults {result['faults']}",
        "rate/s  system    step p50/p99 ms  added/step p50/p99 ms  added/turn p50/p99 ms  "
        "terminal  no-stall",
    ]
    for row in result["rates"]:
        for system, f in row["systems"].items():
            lines.append(
                f"{row['rate']:6g}  {system:8}  {_pair(f, 'step_wait'):>15}  "
                f"{_pair(f, 'added_per_tool_step'):>21}  {_pair(f, 'coordinator_added'):>21}  "
                f"{_num(f['terminal_rate'], '.4f'):>8}  {_num(f['no_stall_rate'], '.4f'):>8}"
            )
    lines.append("added/step: each answered step's wait minus its tool's own time at the gateway")
    for row in result["rates"]:
        for system, f in row["systems"].items():
            b = f["backlog"]
            lines.append(
                f"{row['rate']:g}/s {system}: added/turn p50, first third of the turns"
                f" {_num(b['first_third_p50_ms'], '.0f')} ms, last third"
                f" {_num(b['last_third_p50_ms'], '.0f')} ms (a growing backlog: last >> first)"
            )
    for row in result["rates"]:
        for system, f in row["systems"].items():
            hops = ", ".join(
                f"{hop} {_num(h['p50'], '.0f')}/{_num(h['p99'], '.0f')}"
                for hop, h in f["step_hops_ms"].items()
            )
            cpu = ", ".join(f"{p} {ms:g}" for p, ms in sorted(f["cpu_ms_per_turn"].items()))
            lines.append(f"{row['rate']:g}/s {system}: hops p50/p99 ms: {hops or '-'}")
            lines.append(f"{row['rate']:g}/s {system}: CPU ms/turn: {cpu or '-'}")
            requests = ", ".join(
                f"{route} {n:g}" for route, n in sorted(f["provider_requests_per_turn"].items())
            )
            lines.append(f"{row['rate']:g}/s {system}: provider requests/turn: {requests or '-'}")
    return lines


def _pair(f: dict[str, Any], name: str) -> str:
    return f"{_num(f[f'{name}_p50_ms'], '.0f')}/{_num(f[f'{name}_p99_ms'], '.0f')}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = load()
    plan = load_plan(args.faults)
    systems = SYSTEMS[args.system]
    result: dict[str, Any] = {
        "turns": args.turns,
        "latency": args.latency,
        "faults": args.faults,
        "systems": list(systems),
        "rates": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trace = generate(
            GeneratorConfig(turns=args.turns, seed=21, latency=parse_latency(args.latency)),
            load_registry(settings.tools_file),
        )
        write_trace(folder / "trace.jsonl", trace)
        for rate in args.rates:
            out = folder / f"rate-{rate:g}"
            config = ReplayConfig(
                trace_path=folder / "trace.jsonl", plan=plan, out=out, systems=systems,
                rate=rate, coordinators=plan.replicas.coordinators or 2,
                executors=plan.replicas.executors or 1,
                replay_id=f"bench-b-{int(time.time())}",
            )  # fmt: skip
            replay(config, trace, settings, lambda _: None)
            data = load_replay(out)
            report = build_report(data)
            result["rates"].append(
                {"rate": rate, "systems": {s: figures(data, report, s) for s in systems}}
            )
    return result


def main() -> None:
    unwind_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5,20,40", help="turns per second, comma-separated")
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="runcoord")
    parser.add_argument("--latency", default="fixed:ms=200", help="the model's latency")
    parser.add_argument("--faults", default="none", help="a fault plan (runcoord replay)")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    try:
        args.rates = [float(r) for r in args.rates.split(",")]
        parse_latency(args.latency)
        load_plan(args.faults)
    except (ValueError, ConfigError) as exc:
        parser.error(str(exc))
    # With --json stdout carries the JSON alone; everything else goes to stderr.
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        result = measure(args)
        print("\n".join(table(result)))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""``runcoord replay TRACE --faults PLAN``: replay a trace against runcoord and/or the baseline."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from runcoord.config import load
from runcoord.errors import ConfigError
from runcoord.harness.faultplan import load_plan, plan_path
from runcoord.harness.replay.faults import private_stack
from runcoord.harness.replay.run import ReplayConfig, copy_plan, new_replay_id, replay
from runcoord.harness.report.build import build_report
from runcoord.harness.report.data import load_replay
from runcoord.harness.report.render import print_report
from runcoord.harness.workload.trace import read_trace

_Opt = typer.Option
DEFAULT_ROOT = "replays"  # under the stack's state folder


def replay_command(
    trace: Annotated[Path, typer.Argument(help="The trace (JSONL; `runcoord workload generate`).")],
    faults: Annotated[
        str,
        _Opt(help="Fault plan: none | incident | chaos | matrix/NAME (the fault matrix) | a file."),
    ] = "none",
    provider: Annotated[str, _Opt(help="Provider API: assistants | responses.")] = "assistants",
    observe: Annotated[
        str | None,
        _Opt(help="How runcoord watches Responses runs: stream | poll (RUNCOORD_OBSERVE)."),
    ] = None,
    system: Annotated[str, _Opt(help="runcoord | baseline | both.")] = "both",
    rate: Annotated[
        float | None, _Opt(help="Turns per second (default: the trace's own offsets).")
    ] = None,
    coordinators: Annotated[
        int | None,
        _Opt(help="Coordinator replicas (and baseline replicas); default: the plan's, else 2."),
    ] = None,
    executors: Annotated[
        int | None,
        _Opt(
            help="runcoord executor replicas (of each kind, if split); default: the plan's, else 1."
        ),
    ] = None,
    split_executors: Annotated[
        bool,
        _Opt(
            "--split-executors",
            help="Run each kind of runcoord executor in its own replicas (`executor provider`, "
            "`tools`, `submissions`) instead of every kind in each (`executor all`).",
        ),
    ] = False,
    turns: Annotated[int | None, _Opt(help="Replay only the first N turns.")] = None,
    budget_s: Annotated[float, _Opt(help="Terminal budget per turn, seconds.")] = 120.0,
    drain_s: Annotated[
        float | None, _Opt(help="Wait at most this long after the last send (default: budget).")
    ] = None,
    out: Annotated[Path | None, _Opt(help="Where to keep the evidence.")] = None,
    html: Annotated[Path | None, _Opt(help="Also write the HTML report here.")] = None,
    keep: Annotated[bool, _Opt(help="Keep the replay's databases and topics.")] = False,
    tools: Annotated[
        Path | None, _Opt(help="The tool registry (default: RUNCOORD_TOOLS_FILE).")
    ] = None,
    tools_via: Annotated[
        str,
        _Opt(help="How runcoord reaches the sandbox tools: http | mcp (the baseline: http)."),
    ] = "http",
) -> None:
    """Replay a trace with faults; print the side-by-side report at the end."""
    logging.basicConfig(level=logging.WARNING)
    unwind_on_signals()
    console = Console()
    chosen = ("baseline", "runcoord") if system == "both" else (system,)
    if any(s not in ("baseline", "runcoord") for s in chosen) or provider not in (
        "assistants",
        "responses",
    ):
        raise typer.BadParameter("--system runcoord|baseline|both, --provider assistants|responses")
    if observe is not None and observe not in ("poll", "stream"):
        raise typer.BadParameter("--observe poll|stream")
    if tools_via not in ("http", "mcp"):
        raise typer.BadParameter("--tools-via http|mcp")
    try:
        plan = load_plan(faults)
        turns_list = read_trace(trace)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if turns is not None:
        turns_list = turns_list[:turns]
    settings = load()
    replay_id = new_replay_id()
    coordinators = coordinators or plan.replicas.coordinators or 2
    executors = executors or plan.replicas.executors or 1
    folder = out or settings.state_dir / DEFAULT_ROOT / replay_id
    config = ReplayConfig(
        trace_path=trace,
        plan=plan,
        out=folder,
        provider=provider,
        observe=observe or settings.observe,
        systems=chosen,
        rate=rate,
        coordinators=coordinators,
        executors=executors,
        split_executors=split_executors,
        budget_s=budget_s,
        drain_s=drain_s,
        tools_file=tools or settings.tools_file,
        tools_via="mcp" if tools_via == "mcp" else "http",
        keep=keep,
        replay_id=replay_id,
    )
    started = time.monotonic()
    # A plan's own servers (its `stack`) run for this replay alone, under .state/matrix/stack.
    with private_stack(
        plan.stack, settings, settings.state_dir / "matrix" / "stack", console.print
    ) as own:
        replay(config, turns_list, own, console.print)
    copy_plan(config, plan_path(faults))
    report = build_report(load_replay(folder))
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    print_report(report, console)
    if html is not None:
        from runcoord.harness.report.html import write_html

        console.print(f"HTML report: {write_html(report, load_replay(folder), html)}")
    console.print(f"evidence in {folder}; replay took {time.monotonic() - started:.0f} s")


def unwind_on_signals() -> None:
    """SIGTERM (and SIGINT, which a shell ignores in background jobs) must unwind through the
    replay's cleanup: its replicas stopped, the stack's servers back, topics and database
    dropped. The default SIGTERM would leave all of that behind."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

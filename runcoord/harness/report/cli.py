"""``runcoord report [DIR]``: the figures of a replay (the latest one by default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from runcoord.config import load
from runcoord.harness.report.build import build_report
from runcoord.harness.report.data import latest_replay, load_replay
from runcoord.harness.report.render import print_report

_Opt = typer.Option


def report_command(
    replay_dir: Annotated[
        Path | None, typer.Argument(help="A replay's folder (default: the latest).")
    ] = None,
    as_json: Annotated[bool, _Opt("--json", help="Print one JSON object instead.")] = False,
    html: Annotated[Path | None, _Opt(help="Write an HTML report with PNG plots here.")] = None,
    markdown: Annotated[
        Path | None, _Opt(help="Write a Markdown report with PNG plots here.")
    ] = None,
) -> None:
    """Report a replay's figures: terminal rate, stalls, latency, writes against the audit log."""
    folder = replay_dir or latest_replay(load().state_dir / "replays")
    if folder is None or not (folder / "replay.json").exists():
        typer.echo("error: no replay found; run `runcoord replay` first", err=True)
        raise typer.Exit(2)
    data = load_replay(folder)
    report = build_report(data)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report, Console())
    if html is not None or markdown is not None:
        from runcoord.harness.report.html import write_html, write_markdown

        if html is not None:
            typer.echo(f"HTML report: {write_html(report, data, html)}", err=as_json)
        if markdown is not None:
            typer.echo(f"Markdown report: {write_markdown(report, data, markdown)}", err=as_json)

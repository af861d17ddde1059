"""`runcoord stack up | down | status | logs`: the local Kafka, PostgreSQL and Redis."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from runcoord.config import load
from runcoord.stack import orchestrate
from runcoord.stack.console import err, exits_cleanly, out
from runcoord.stack.procs import tail

app = typer.Typer(no_args_is_help=True)


def _say(message: str) -> None:
    out.print(message, markup=False, highlight=False, soft_wrap=True)


@app.command()
@exits_cleanly
def up(
    brokers: Annotated[
        int | None,
        typer.Option(help="Kafka brokers in one KRaft quorum (default RUNCOORD_KAFKA_BROKERS)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each component gets to become healthy.")
    ] = orchestrate.DEFAULT_TIMEOUT,
) -> None:
    """Start Kafka, PostgreSQL and Redis (what is not running yet) and wait until healthy."""
    orchestrate.up(load(), _say, brokers=brokers, timeout=timeout)
    _say("stack: up")


@app.command()
@exits_cleanly
def down(
    purge: Annotated[
        bool, typer.Option(help="Also delete their data (the Kafka jar cache is kept).")
    ] = False,
) -> None:
    """Stop exactly what `up` started (found by its pid files); nothing else."""
    orchestrate.down(load(), _say, purge=purge)
    _say("stack: down")


@app.command()
@exits_cleanly
def browser() -> None:
    """Make sure Debian's chromium is there (installing it when root), for the console's
    browser tests; print its path."""
    from runcoord.stack.browser import ensure_chromium

    _say(f"browser: {ensure_chromium()}")


@app.command()
@exits_cleanly
def status() -> None:
    """Each component, its address, and whether it is healthy; exit 1 if any is not."""
    rows = orchestrate.status(load())
    table = Table()
    for column in ("component", "address", "pid", "health"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    table.add_column("log", overflow="fold")
    for row in rows:
        health = "[green]healthy[/]" if row.healthy else "[red]down[/]"
        pid = str(row.pid) if row.pid else ("external" if not row.managed else "-")
        table.add_row(row.name, row.address, pid, health, row.detail, str(row.log or ""))
    out.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


@app.command()
@exits_cleanly
def logs(
    component: Annotated[
        str | None, typer.Argument(help="kafka, kafka-N, postgres or redis (default: all).")
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines from the end of each.")] = 40,
) -> None:
    """The last lines of each component's log."""
    files = orchestrate.log_files(load())
    chosen = {
        name: path
        for name, path in files.items()
        if component is None or name == component or name.split("-")[0] == component
    }
    if not chosen:
        err.print(f"no log for {component!r}; known: {', '.join(files)}", markup=False)
        raise typer.Exit(2)
    for name, path in chosen.items():
        out.rule(f"{name}: {path}", style="dim")
        out.print(tail(path, lines), markup=False, highlight=False, soft_wrap=True)

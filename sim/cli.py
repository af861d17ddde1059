"""`runcoord sim …`: the simulated provider and the sandbox tool gateway."""

from __future__ import annotations

import typer

from sim.provider.cli import provider
from sim.tools.cli import tools

app = typer.Typer(no_args_is_help=True)
app.command("provider")(provider)
app.command("tools")(tools)

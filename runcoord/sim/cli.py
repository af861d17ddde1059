"""`runcoord sim …`: the simulated provider and the sandbox tool gateway."""

from __future__ import annotations

import typer

from runcoord.sim.provider.cli import provider
from runcoord.sim.tools.cli import mcp, tools

app = typer.Typer(no_args_is_help=True)
app.command("provider")(provider)
app.command("tools")(tools)
app.command("mcp")(mcp)

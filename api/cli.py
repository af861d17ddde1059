"""`runcoord api`: serve the agent API, relay its outbox, manage API keys."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)

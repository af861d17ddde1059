"""Console output for the CLI groups, and the one place a RuncoordError becomes an exit code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from runcoord.errors import RuncoordError

out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def exits_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Print our own errors as one message (no traceback) and exit 1: they are meant for people."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except RuncoordError as exc:
            # Text, not markup: messages quote log lines, and "[...]" in them is not styling.
            err.print(
                Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None

    return wrapper

"""`python -m runcoord.codec lock|check`: keep the lock file and the evolution rules honest.

Holds a `typer` app like the other command groups, so `runcoord schemas ...` can mount it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from runcoord.codec.catalog import SchemaCatalog
from runcoord.codec.compat import evolution_problems
from runcoord.codec.lock import LOCK_FILE, check_lock, update_lock
from runcoord.errors import ConfigError
from runcoord.schemas import SCHEMA_DIR

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

SchemaDir = Annotated[Path, typer.Option("--schema-dir", help="Folder of .avsc files.")]


def _fail(problems: list[str]) -> NoReturn:
    for problem in problems:
        typer.echo(problem, err=True)
    raise typer.Exit(1)


@app.command()
def lock(schema_dir: SchemaDir = SCHEMA_DIR) -> None:
    """Add new schema versions to the lock file; refuse if a locked version changed."""
    try:
        added = update_lock(SchemaCatalog.load(schema_dir), schema_dir / LOCK_FILE)
    except ConfigError as exc:
        _fail([str(exc)])
    for entry in added:
        typer.echo(f"locked {entry.line()}")
    if not added:
        typer.echo("nothing new to lock")


@app.command()
def check(schema_dir: SchemaDir = SCHEMA_DIR) -> None:
    """Fail unless every version is locked unchanged and evolution stays compatible both ways."""
    try:
        catalog = SchemaCatalog.load(schema_dir)
        problems = check_lock(catalog, schema_dir / LOCK_FILE) + evolution_problems(catalog)
    except ConfigError as exc:
        problems = [str(exc)]
    if problems:
        _fail(problems)
    typer.echo(f"{sum(1 for _ in catalog)} schema versions: locked and compatible")

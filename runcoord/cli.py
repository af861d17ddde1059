"""The ``runcoord`` command. Each group lives beside the code it drives; this file only mounts them."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="runcoord",
    help="Exactly-once coordination of agent runs whose tools have real side effects.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# (command group, module holding a `app: typer.Typer`, help). Imported lazily so that a
# broken or heavy optional module cannot stop `runcoord stack up` from working.
_GROUPS: list[tuple[str, str, str]] = [
    ("stack", "runcoord.stack.cli", "The local stack: Kafka (KRaft), PostgreSQL, Redis."),
    ("topics", "runcoord.topics", "Create and verify the topics declared in topics.yaml."),
    ("sim", "sim.cli", "Simulators: the provider API and the sandbox tool gateway."),
    ("db", "runcoord.db", "Database migrations."),
]


def _mount() -> None:
    for name, module, help_text in _GROUPS:
        try:
            sub = importlib.import_module(module).app
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        app.add_typer(sub, name=name, help=help_text)


_mount()


def main() -> None:
    app()

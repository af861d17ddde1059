"""The ``runcoord`` command. Each group lives beside the code it drives; this file mounts them."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="runcoord",
    help="Exactly-once coordination of agent runs whose tools have real side effects.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# (command group, module holding a `app: typer.Typer`, help). Imported at start-up: every
# module is light; a command's heavy imports happen inside the command.
_GROUPS: list[tuple[str, str, str]] = [
    ("stack", "runcoord.stack.cli", "The local stack: Kafka (KRaft), PostgreSQL, Redis."),
    ("topics", "runcoord.topics", "Create and verify the topics declared in topics.yaml."),
    ("schemas", "runcoord.codec.cli", "Check and lock the Avro schemas."),
    ("sim", "sim.cli", "Simulators: the provider API and the sandbox tool gateway."),
    ("db", "runcoord.db", "Database migrations."),
    ("workload", "harness.workload.cli", "Workload traces for the evaluation harness."),
    ("executor", "effects.cli", "Effect executors: provider, tools, submissions."),
]
# (command, module, function): single commands.
_COMMANDS: list[tuple[str, str, str]] = [
    ("coordinator", "coordinator.cli", "coordinator"),
]


def _mount() -> None:
    for name, module, help_text in _GROUPS:
        app.add_typer(importlib.import_module(module).app, name=name, help=help_text)
    for name, module, function in _COMMANDS:
        app.command(name)(getattr(importlib.import_module(module), function))


_mount()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

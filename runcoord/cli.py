"""The ``runcoord`` command. Each group lives beside the code it drives; this file mounts them."""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="runcoord",
    help="Exactly-once coordination of agent runs whose tools have real side effects.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Exactly-once coordination of agent runs whose tools have real side effects."""
    # A callback keeps `runcoord` a group when main() mounts a single command; without it
    # Typer runs that command as the program itself and reads its name as an argument.


# (command group, module holding a `app: typer.Typer`, help). Only the module of the command
# being run is imported (all of them for --help): importing every group (FastAPI, the openai
# SDK, matplotlib…) cost seconds per start, and replicas restart after every kill -9.
_GROUPS: list[tuple[str, str, str]] = [
    ("stack", "runcoord.stack.cli", "The local stack: Kafka (KRaft), PostgreSQL, Redis."),
    ("topics", "runcoord.topics", "Create and verify the topics declared in topics.yaml."),
    ("schemas", "runcoord.codec.cli", "Check and lock the Avro schemas."),
    ("sim", "runcoord.sim.cli", "Simulators: the provider API and the sandbox tool gateway."),
    ("db", "runcoord.db", "Database migrations."),
    ("workload", "runcoord.harness.workload.cli", "Workload traces for the evaluation harness."),
    ("forensics", "runcoord.forensics.cli", "The run projection, one run's story, anomaly scans."),
    ("api", "runcoord.api.cli", "The agent API, its outbox relay and its API keys."),
]
# (group, command, module, function): a group whose commands live in different packages.
_SUBCOMMANDS: list[tuple[str, str, str, str]] = [
    ("executor", "provider", "runcoord.provider.cli", "provider"),
    ("executor", "tools", "runcoord.tools.cli", "tools"),
    ("executor", "submissions", "runcoord.submitter.cli", "submissions"),
    ("executor", "all", "runcoord.executors", "all_kinds"),
]
_SUBGROUP_HELP = {"executor": "Effect executors: provider, tools, submissions, or all in one."}
# (command, module, function): single commands.
_COMMANDS: list[tuple[str, str, str]] = [
    ("coordinator", "runcoord.coordinator.cli", "coordinator"),
    ("replay", "runcoord.harness.replay.cli", "replay_command"),
    ("report", "runcoord.harness.report.cli", "report_command"),
    ("dev", "runcoord.dev.cli", "dev"),
    ("turn", "runcoord.dev.cli", "turn"),
]


def _mount(only: str | None = None, only_sub: str | None = None) -> None:
    for name, module, help_text in _GROUPS:
        if only in (None, name):
            app.add_typer(importlib.import_module(module).app, name=name, help=help_text)
    for group in dict.fromkeys(g for g, *_ in _SUBCOMMANDS):
        if only in (None, group):
            sub = typer.Typer(no_args_is_help=True)
            # `executor tools` imports the tool executor alone: the provider executor's
            # module brings the openai SDK, 1.3 s of a restart after a kill -9.
            names = {n for g, n, *_ in _SUBCOMMANDS if g == group}
            wanted = only_sub if only_sub in names else None  # all of them for --help
            for g, name, module, function in _SUBCOMMANDS:
                if g == group and wanted in (None, name):
                    sub.command(name)(getattr(importlib.import_module(module), function))
            app.add_typer(sub, name=group, help=_SUBGROUP_HELP[group])
    for name, module, function in _COMMANDS:
        if only in (None, name):
            app.command(name)(getattr(importlib.import_module(module), function))


def main() -> None:
    known = {name for name, *_ in (*_GROUPS, *_SUBCOMMANDS, *_COMMANDS)}
    command = sys.argv[1] if len(sys.argv) > 1 else None
    subcommand = sys.argv[2] if len(sys.argv) > 2 else None
    _mount(command if command in known else None, subcommand)
    app()


if __name__ == "__main__":
    main()

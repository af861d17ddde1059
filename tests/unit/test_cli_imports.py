"""The ``runcoord`` command imports only the module of the command being run: an executor
restarted after a kill -9 starts in the time its own imports take."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

PROBE = """
import json
import sys
from runcoord import cli
sys.argv = ["runcoord", *{argv!r}]
try:
    cli.main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in ("openai", "runcoord.provider.cli", "runcoord.tools.cli",
                         "runcoord.submitter.cli", "runcoord.provider.assistants",
                         "runcoord.provider.responses") if m in sys.modules)))
"""


def imported(*argv: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv))],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("executor", "tools", "--help"), ["runcoord.tools.cli"]),
        # The adapters wait for their first intent (runcoord.provider.cli.Adapters).
        (("executor", "provider", "--help"), ["openai", "runcoord.provider.cli"]),
        (
            ("executor", "submissions", "--help"),
            ["openai", "runcoord.provider.cli", "runcoord.submitter.cli"],
        ),
        (
            ("executor", "all", "--help"),
            ["openai", "runcoord.provider.cli", "runcoord.tools.cli"],
        ),
    ],
)
def test_an_executor_imports_only_its_own_command(
    argv: tuple[str, ...], expected: list[str]
) -> None:
    assert imported(*argv) == expected


def test_the_executor_group_help_still_lists_every_executor() -> None:
    assert imported("executor", "--help") == [
        "openai",
        "runcoord.provider.cli",
        "runcoord.submitter.cli",
        "runcoord.tools.cli",
    ]


def test_an_adapter_is_built_at_its_first_use_and_once() -> None:
    from runcoord.provider.cli import Adapters

    built: list[str] = []

    def make(name: str) -> Any:
        built.append(name)
        return f"adapter {name}"

    adapters = Adapters(
        {"assistants": lambda: make("assistants"), "responses": lambda: make("responses")}
    )
    assert built == [] and sorted(adapters) == ["assistants", "responses"]
    assert adapters["responses"] == adapters.get("responses") == "adapter responses"
    assert built == ["responses"]
    assert adapters.get("bedrock") is None and built == ["responses"]

    # The protocols the configuration gives turns are built at start.
    Adapters({"assistants": lambda: make("assistants")}, expected=["assistants"])
    assert built == ["responses", "assistants"]

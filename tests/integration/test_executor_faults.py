"""kill -9 of an executor after the outside world acted and before our ledger knew it.

Each test kills one executor at its fault point, restarts it without the fault, and checks
the outside world's own records: the simulator's runs and submissions, the gateway's audit.
The replica that hosts every kind (``executor all``) takes every other kind's work in flight
down with it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from tests.integration.e2e import SDK_WARNINGS, Stack, assert_one_action_per_call, launch, turns

pytestmark = [pytest.mark.integration, pytest.mark.fault, *SDK_WARNINGS]


def kill_then_restart(stack: Stack, name: str, point: str, runs: set[str]) -> None:
    proc = stack.procs[name]

    def died() -> str | None:
        return None if not proc.alive() else "still alive"

    wait_until(died, timeout=90, what=f"{name} to die at {point}")
    assert proc.popen is not None and proc.popen.returncode == -signal.SIGKILL
    assert f"fault point {point} reached" in proc.tail(100_000)
    proc.env.pop("RUNCOORD_FAULT_AT", None)
    proc.start()
    finished = stack.wait_finished(runs, timeout=150)
    assert {r: s for r, (s, _) in finished.items()} == dict.fromkeys(runs, "completed")


@pytest.mark.parametrize(
    ("process", "point"),
    [
        ("provider-exec", "provider.after_create"),
        ("submit-exec", "submit.after_send"),
        ("tools-exec", "tool.after_send"),
        ("executor", "tool.after_send"),
    ],
)
def test_kill_after_acting_before_recording(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path, process: str, point: str
) -> None:
    env = {process: {"RUNCOORD_FAULT_AT": f"kill@{point}:3"}}
    layout = "all" if process == "executor" else "split"
    with launch(bootstrap, pg_dsn, topics, tmp_path, env, executors=layout) as stack:
        runs = turns(6, f"kill-{process}")
        stack.start_turns(runs)
        kill_then_restart(stack, process, point, set(runs))
        # One provider run per turn, one accepted submission per step, one action per call.
        assert_one_action_per_call(stack, set(runs))

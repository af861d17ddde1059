"""How the harness lays runcoord's executors out: every kind in each replica, or split."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcoord.harness.replay.procs import Supervisor
from runcoord.harness.systems.runcoord_system import RuncoordSystem


def system(tmp_path: Path, split: bool) -> RuncoordSystem:
    return RuncoordSystem(
        "127.0.0.1:1", "p.", tmp_path, "postgresql://x", "http://sim/v1", "http://gw",
        tmp_path / "tools.yaml", coordinators=1, executors=2, split_executors=split,
    )  # fmt: skip


def executor_argv(supervisor: Supervisor, name: str) -> list[str]:
    argv = supervisor.replicas[name].argv
    return argv[argv.index("executor") :]


def test_one_replica_hosts_every_kind_and_answers_to_each_kinds_fault_targets(
    tmp_path: Path,
) -> None:
    s = system(tmp_path, split=False)
    supervisor = Supervisor()
    s.replicas(supervisor)
    assert sorted(supervisor.replicas) == ["coord-0", "exec-0", "exec-1"]
    for i in (0, 1):
        targets = {t for t, name in supervisor.by_target.items() if name == f"exec-{i}"}
        assert targets == {f"executor-{k}:{i}" for k in ("all", "provider", "tools", "submissions")}
    argv = executor_argv(supervisor, "exec-1")
    assert argv[:2] == ["executor", "all"]
    for option in ("--provider-url", "--gateway-url", "--registry", "--observe"):
        assert option in argv
    assert s.groups() == {"p.coordinator": 1, "p.runcoord-executor-all": 2}
    # A plan's roles count every kind's replicas.
    assert supervisor.counts()["executor-tools"] == 2


@pytest.mark.parametrize("kind", ["provider", "tools", "submissions"])
def test_split_replicas_run_their_own_kind(tmp_path: Path, kind: str) -> None:
    s = system(tmp_path, split=True)
    supervisor = Supervisor()
    s.replicas(supervisor)
    assert supervisor.by_target[f"executor-{kind}:1"] == f"exec-{kind}-1"
    assert executor_argv(supervisor, f"exec-{kind}-1")[:2] == ["executor", kind]
    assert s.groups()[f"p.runcoord-executor-{kind}"] == 2

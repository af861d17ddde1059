"""The fault plan format: parsing, refusing bad plans, and expanding into a timeline."""

from __future__ import annotations

import pytest

from runcoord.errors import ConfigError
from runcoord.harness.faultplan import expand, load_plan
from runcoord.harness.faultplan.model import parse_plan, parse_when

RUNCOORD = {
    "coordinator": 2,
    "executor-provider": 1,
    "executor-tools": 1,
    "executor-submissions": 1,
}
BASELINE = {"coordinator": 2}


@pytest.mark.parametrize(
    ("raw", "window", "seconds"),
    [(30, 100, 30), ("30s", 100, 30), ("500ms", 100, 0.5), ("2m", 100, 120), ("40%", 50, 20)],
)
def test_times(raw: object, window: float, seconds: float) -> None:
    assert parse_when(raw).seconds(window) == pytest.approx(seconds)


@pytest.mark.parametrize("name", ["none", "incident", "chaos"])
def test_shipped_plans_load(name: str) -> None:
    plan = load_plan(name)
    assert plan.name == name
    expand(plan, 100, RUNCOORD)


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        ({"faults": [{"kind": "meteor", "at": 1}]}, "meteor"),
        ({"faults": [{"kind": "kill", "target": "coordinator", "at": 1}]}, "ROLE:INDEX"),
        ({"faults": [{"kind": "kill", "target": "db:0", "at": 1}]}, "ROLE:INDEX"),
        ({"faults": [{"kind": "provider_latency", "at": "x", "duration": 1}]}, "not a time"),
        ({"faults": [{"kind": "slow_success", "at": 1, "duration": 2, "rate": 2}]}, "rate"),
        (
            {
                "faults": [
                    {"kind": "provider_latency", "at": 1, "duration": 1, "endpoints": ["submitt"]}
                ]
            },
            "submitt",
        ),
        ({"faults": [{"kind": "kill_random", "between": [1], "count": 1}]}, "between"),
        ({"faults": [{"kind": "redis_outage", "at": 1, "duration": 1, "extra": 1}]}, "extra"),
        ({"fault": []}, "fault"),
    ],
)
def test_bad_plans_are_refused(plan: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_plan(plan)


def test_windows_become_on_and_off_actions() -> None:
    plan = parse_plan(
        {
            "faults": [
                {
                    "kind": "slow_success",
                    "at": "10%",
                    "duration": "20%",
                    "rate": 0.5,
                    "ms": 3000,
                    "tools": ["create_ticket"],
                },
                {"kind": "redis_outage", "at": 5, "duration": "3s"},
            ]
        }
    )
    timeline = expand(plan, 200, RUNCOORD)
    kinds = [(a.kind, a.at_s, a.params.get("on")) for a in timeline]
    assert kinds == [
        ("redis_down", 5.0, None),
        ("redis_up", 8.0, None),
        ("gateway_window", 20.0, True),
        ("gateway_window", 60.0, False),
    ]
    on = timeline[2]
    assert on.params["knobs"] == {"slow_success": {"rate": 0.5, "ms": 3000}}
    assert on.params["tools"] == ["create_ticket"]


def test_random_kills_are_the_same_for_both_systems() -> None:
    plan = parse_plan(
        {
            "seed": 4,
            "faults": [
                {
                    "kind": "kill_random",
                    "between": ["10%", "90%"],
                    "count": 6,
                    "restart_after": "1s",
                }
            ],
        }
    )
    ours = expand(plan, 100, RUNCOORD)
    theirs = expand(plan, 100, BASELINE)
    assert [(a.at_s, a.kind, a.label) for a in ours] == [(a.at_s, a.kind, a.label) for a in theirs]
    assert all(a.applicable for a in ours)
    # The baseline has coordinators only: kills of executors are in its timeline, not applied.
    for a in theirs:
        assert a.applicable == a.params["target"].startswith("coordinator:")
    kills = [a for a in ours if a.kind == "kill"]
    restarts = [a for a in ours if a.kind == "restart"]
    assert len(kills) == len(restarts) == 6
    assert all(10 <= a.at_s <= 90 for a in kills)
    assert expand(plan, 100, RUNCOORD) == ours  # the seed decides


# ---------------------------------------------------------------------- the fault matrix


def test_matrix_plans_load_by_name_and_expand() -> None:
    from runcoord.harness.faultplan.model import matrix_plans

    names = matrix_plans()
    assert len(names) >= 20
    for name in names:
        plan = load_plan(name)
        assert plan.name == name.removeprefix("matrix/")
        assert plan.description
        expand(plan, 10, {**RUNCOORD, "executor-tools": 2})


def test_the_matrix_kills_every_process_kind_at_every_fault_point() -> None:
    from runcoord.coordinator.loop import FAULT_POINTS as COORDINATOR_POINTS
    from runcoord.harness.faultplan.model import FAULT_POINTS, KillAt, matrix_plans

    assert FAULT_POINTS["coordinator"] == COORDINATOR_POINTS
    killed = {
        (fault.role, fault.point)
        for name in matrix_plans()
        for fault in load_plan(name).faults
        if isinstance(fault, KillAt)
    }
    assert killed == {(role, p) for role, points in FAULT_POINTS.items() for p in points}


def test_every_named_fault_point_in_the_code_is_known() -> None:
    import re
    from pathlib import Path

    from runcoord.config import PACKAGE_DIR
    from runcoord.harness.faultplan.model import FAULT_POINTS

    found = {
        m.group(1)
        for path in Path(PACKAGE_DIR).rglob("*.py")
        for m in re.finditer(r'fault_point\("([^"]+)"\)', path.read_text())
    }
    assert found == {p for points in FAULT_POINTS.values() for p in points}


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ({"kind": "kill_at", "target": "coordinator:0", "point": "tool.after_send"}, "no fault"),
        ({"kind": "kill_at", "target": "executor-tools:0"}, "point"),
        (
            {
                "kind": "pause",
                "target": "coordinator:0",
                "at": 1,
                "point": "after_commit",
                "duration": 5,
            },
            "either at",
        ),
        ({"kind": "pause", "target": "coordinator:0", "duration": 5}, "either at"),
        ({"kind": "partition", "target": "executor-tools:0", "at": 1, "duration": 5}, "ROLE"),
        ({"kind": "leader_kill", "at": 1}, "3 or more brokers"),
        ({"kind": "leader_kill", "at": 1, "topic": "runs.nope"}, "topic"),
    ],
)
def test_bad_matrix_faults_are_refused(fault: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_plan({"faults": [fault]})


def test_a_replica_is_armed_once() -> None:
    armed = {"kind": "kill_at", "target": "coordinator:0", "point": "after_commit"}
    with pytest.raises(ConfigError, match="armed twice"):
        parse_plan({"faults": [armed, {**armed, "point": "before_commit"}]})


def test_matrix_faults_expand() -> None:
    from runcoord.harness.faultplan.schedule import armed_at_start, partitioned

    plan = parse_plan(
        {
            "stack": {"kafka_brokers": 3},
            "faults": [
                {"kind": "kill_at", "target": "executor-tools:0", "point": "tool.after_send",
                 "nth": 4, "restart_after": "3s"},
                {"kind": "kill_at", "target": "coordinator:1", "point": "after_commit",
                 "at": "50%"},
                {"kind": "pause", "target": "executor-tools:0", "at": 2, "duration": "40s"},
                {"kind": "pause", "target": "coordinator:0", "point": "before_commit",
                 "duration": 20},
                {"kind": "leader_kill", "at": "10%", "down_for": 5, "topic": "runs.events",
                 "partition": 2},
                {"kind": "partition", "target": "coordinator:0", "at": 3, "duration": 20,
                 "mode": "blackhole"},
            ],
        }
    )  # fmt: skip
    timeline = expand(plan, 100, RUNCOORD)
    got = [(a.kind, a.at_s, a.params.get("target")) for a in timeline]
    assert got == [
        ("kill_at", 0.0, "executor-tools:0"),
        ("pause_watch", 0.0, "coordinator:0"),
        ("pause", 2.0, "executor-tools:0"),
        ("partition_cut", 3.0, "coordinator:0"),
        ("leader_kill", 10.0, None),
        ("leader_up", 15.0, None),
        ("partition_heal", 23.0, "coordinator:0"),
        ("resume", 42.0, "executor-tools:0"),
        ("kill_at", 50.0, "coordinator:1"),
    ]
    first = timeline[0].params
    assert first["spec"] == "kill@tool.after_send:4" and not first["rearm"]
    assert first["restart_after_s"] == 3.0
    assert timeline[-1].params["rearm"]
    assert timeline[1].params["spec"] == "stop@before_commit:1"
    assert timeline[4].params["topic"] == "runs.events" and timeline[4].params["partition"] == 2
    assert timeline[3].params["mode"] == "blackhole"
    assert armed_at_start(plan) == {
        "executor-tools:0": "kill@tool.after_send:4",
        "coordinator:0": "stop@before_commit:1",
    }
    assert partitioned(plan) == {"coordinator:0"}
    # The baseline has no executors: their faults are in its timeline, not applied.
    theirs = expand(plan, 100, BASELINE)
    assert [a.applicable for a in theirs if a.params.get("target") == "executor-tools:0"] == [
        False,
        False,
        False,
    ]


# ---------------------------------------------------------------------- self-inflicted faults

# The child replica: it passes the point three times (an armed plan stops or kills it
# there), then stays up like a replica until the supervisor stops it at the test's end. The
# test itself waits on the runner's conditions, with deadlines.
_SELF_KILL = (
    "import signal\n"
    "from runcoord.faults import fault_point\n"
    "for _ in range(3):\n"
    "    fault_point('tool.after_send')\n"
    "signal.pause()\n"
)


def _runner(replica: object, plan: object) -> object:
    from typing import Any, cast

    from runcoord.config import load
    from runcoord.harness.replay.faults import FaultRunner, stage
    from runcoord.harness.replay.procs import Supervisor

    supervisor = Supervisor()
    supervisor.add(cast(Any, replica), "executor-tools:0")
    stage(cast(Any, plan), supervisor, load(), "rpx.")
    runner = FaultRunner(
        expand(cast(Any, plan), 10, RUNCOORD),
        sims=cast(Any, None),
        supervisor=supervisor,
        settings=load(),
        seed=0,
        duplicate=lambda pick, intents: "",
        resubmit=lambda after: "",
    )
    return supervisor, runner


def test_kill_at_watches_the_death_and_restarts_unarmed(tmp_path: object) -> None:
    import sys
    import time
    from pathlib import Path
    from typing import Any, cast

    from runcoord.harness.replay.procs import Replica

    replica = Replica(
        "exec-tools-0", "executor-tools", [sys.executable, "-c", _SELF_KILL],
        Path(str(tmp_path)) / "tools.log",
    )  # fmt: skip
    plan = parse_plan(
        {"faults": [{"kind": "kill_at", "target": "executor-tools:0",
                     "point": "tool.after_send", "nth": 2, "restart_after": "200ms"}]}
    )  # fmt: skip
    supervisor, runner = cast(Any, _runner(replica, plan))
    assert replica.armed == "kill@tool.after_send:2"
    supervisor.start_all()
    try:
        assert supervisor.dead() == []  # an armed replica's death is the plan's
        runner.start(time.time())
        deadline = time.time() + 30
        while replica.starts < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert replica.starts == 2 and replica.armed is None
        kinds = [(f["kind"], f["ok"]) for f in runner.fired]
        assert kinds == [("kill_at", True), ("kill_at_death", True), ("restart", True)]
        death = runner.fired[1]
        assert death["exit_code"] == -9 and "reached" in death["detail"]
        assert replica.alive()  # unarmed now: it passes the point and lives on
        assert not runner.settled(quiet_s=60) and runner.settled(quiet_s=0)
    finally:
        runner.stop()
        supervisor.stop_all()


def test_pause_at_a_point_resumes_the_replica(tmp_path: object) -> None:
    import sys
    import time
    from pathlib import Path
    from typing import Any, cast

    from runcoord.harness.replay.procs import Replica

    replica = Replica(
        "exec-tools-0", "executor-tools", [sys.executable, "-c", _SELF_KILL],
        Path(str(tmp_path)) / "tools.log",
    )  # fmt: skip
    plan = parse_plan(
        {"faults": [{"kind": "pause", "target": "executor-tools:0",
                     "point": "tool.after_send", "duration": "1s"}]}
    )  # fmt: skip
    supervisor, runner = cast(Any, _runner(replica, plan))
    supervisor.start_all()
    try:
        runner.start(time.time())
        deadline = time.time() + 30
        while len(runner.fired) < 3 and time.time() < deadline:
            time.sleep(0.05)
        kinds = [(f["kind"], f["ok"]) for f in runner.fired]
        assert kinds == [("pause_watch", True), ("stopped", True), ("resume", True)]
        assert replica.alive() and replica.state() != "T"
    finally:
        runner.stop()
        supervisor.stop_all()


# ---------------------------------------------------------------------- the partition bridge


def test_the_bridge_forwards_cuts_and_heals() -> None:
    import socket
    import threading

    from runcoord.harness.replay.netpart import Bridge, socket_path

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    bridge = Bridge([port])
    bridge.start()
    opened: list[socket.socket] = []
    try:

        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX)
            opened.append(s)
            s.settimeout(5)
            s.connect(str(socket_path(bridge.folder, port)))
            return s

        first = connect()
        first.sendall(b"ping")
        assert first.recv(10) == b"ping"
        assert "reset 1 connection" in bridge.cut("reset")
        assert first.recv(10) == b""  # cut
        refused = connect()
        assert refused.recv(10) == b""  # refused at once
        bridge.heal()
        again = connect()
        again.sendall(b"pong")
        assert again.recv(10) == b"pong"
        bridge.cut("blackhole")
        again.sendall(b"held")
        again.settimeout(0.5)
        with pytest.raises(TimeoutError):
            again.recv(10)
        bridge.heal()
        again.settimeout(5)
        assert again.recv(10) == b"held"  # a healed blackhole delivers late
    finally:
        for s in opened:
            s.close()
        bridge.close()
        server.close()
    assert not bridge.folder.exists()


def _echo(conn: object) -> None:
    import contextlib
    import socket

    assert isinstance(conn, socket.socket)
    with conn, contextlib.suppress(OSError):  # the bridge resets it: that is the test
        while data := conn.recv(1024):
            conn.sendall(data)


# ---------------------------------------------------------------------- judging a run


def test_inputs_lost_are_runs_in_neither_the_journal_nor_the_dlq(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from runcoord.harness.faultplan.matrix import MatrixRun, inputs_lost, judge

    folder = Path(str(tmp_path))
    (folder / "runs.jsonl").write_text(
        "".join(json.dumps({"run_id": r}) + "\n" for r in ("a", "b", "c", "d"))
    )
    assert inputs_lost(folder)[0] is None  # no journal evidence: unknown
    (folder / "journal.jsonl").write_text('{"run_id": "a"}\n{"run_id": "a"}\n{"run_id": "b"}\n')
    (folder / "dlq.jsonl").write_text('{"run_id": "c"}\n')
    assert inputs_lost(folder) == (1, ["d"], None)

    row = MatrixRun("x", 1, 1, 4, "", runs_sent=4, completed=4, excess=0, duplicate_keys=0,
                    extra_provider_runs=0, extra_threads=0, stalls=0, inputs_lost=0,
                    unexplained=0)  # fmt: skip
    assert judge(row).verdict == "PASS"
    row.inputs_lost = 1
    assert judge(row).verdict == "FAIL" and "inputs lost: 1" in row.reasons
    row.inputs_lost, row.completed = 0, 1
    assert judge(row).verdict == "FAIL" and "nothing was proven" in row.reasons[0]
    row.completed, row.faults_failed = 4, ["kill_at_death x: not reached"]
    assert judge(row).verdict == "FAIL"

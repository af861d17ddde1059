"""The parts of `runcoord dev` that need no stack: the restart backoff, the combined log's two
formats, the single-instance lock, the process plan, the SSE parser, and a child that keeps
exiting being restarted with the backoff and one line each time."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from runcoord.config import Settings
from runcoord.dev import state
from runcoord.dev.cli import Ports, plan
from runcoord.dev.client import parse_sse
from runcoord.dev.logs import CombinedLog, child_object
from runcoord.dev.supervisor import Backoff, Spec, Supervisor, how_it_ended
from runcoord.stack.polling import wait_until


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff()
    assert [backoff.after_exit(uptime=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.after_exit(uptime=60) == 1  # stayed up a minute: a fresh start
    assert backoff.after_exit(uptime=0.5) == 2


def test_how_a_child_ended_names_the_signal() -> None:
    assert how_it_ended(3) == "exit code 3"
    assert how_it_ended(-9) == "killed by SIGKILL"


def test_text_lines_are_prefixed_without_colour_when_not_a_terminal() -> None:
    out = io.StringIO()
    log = CombinedLog(["api", "exec-tools"], stream=out)
    log.line("api", "GET /healthz [200]")  # brackets are text, never markup
    log.say("api restarted")
    assert out.getvalue().splitlines() == [
        "api        | GET /healthz [200]",
        "dev        | api restarted",
    ]
    assert "\x1b[" not in out.getvalue()
    assert log.colour("api") != log.colour("exec-tools")


def test_json_lines_carry_the_process() -> None:
    out = io.StringIO()
    log = CombinedLog(["relay"], json_lines=True, stream=out)
    log.line("relay", json.dumps({"level": "info", "msg": "relay up", "run_id": "r1"}))
    log.line("relay", "Traceback (most recent call last):")
    log.say("relay exited", level="warning", event="exited", returncode=1)
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"process": "relay", "level": "info", "msg": "relay up", "run_id": "r1"}
    assert second["process"] == "relay" and second["raw"] is True
    assert second["msg"].startswith("Traceback")
    assert third["process"] == "dev" and third["event"] == "exited"
    assert child_object("x", "{not json")["raw"] is True


def test_a_second_lock_names_the_holder(tmp_path: Path) -> None:
    lock = state.DevLock(tmp_path / "dev.lock")
    with pytest.raises(state.AlreadyRunning, match=r"already running \(pid \d+\)"):
        state.DevLock(tmp_path / "dev.lock")
    lock.release()
    state.DevLock(tmp_path / "dev.lock").release()  # free again once released


def test_the_plan_points_every_process_at_the_simulators_and_the_prefix() -> None:
    ports = Ports(api=18400, sim_provider=18390, sim_tools=18391, metrics={"api": 19400})
    p = plan(
        Settings(),
        sim=True,
        api_host="127.0.0.1",
        ports=ports,
        topic_prefix="t1.",
        providers_file=None,
        json_logs=True,
    )
    names = [s.name for s in p.specs]
    assert names[:2] == ["sim-provider", "sim-tools"]  # up first
    assert {"coord-0", "coord-1", "exec", "projector", "relay", "api"} <= set(names)
    assert p.env["RUNCOORD_PROVIDER_URL"] == "http://127.0.0.1:18390/v1"
    assert p.env["RUNCOORD_GATEWAY_URL"] == "http://127.0.0.1:18391"
    assert p.env["RUNCOORD_LOG_FORMAT"] == "json"
    for spec in p.specs[2:]:
        assert spec.argv()[1:3] == ["-m", "runcoord.cli"]
        assert "--topic-prefix" in spec.args and "t1." in spec.args
        assert "--metrics-port" in spec.args  # always given: 0 where metrics are off
    api = next(s for s in p.specs if s.name == "api")
    assert api.metrics_port == 19400 and "18400" in api.args
    coord = next(s for s in p.specs if s.name == "coord-1")
    assert "t1.runcoord-coordinator" in coord.args


def test_server_sent_events_are_parsed() -> None:
    lines = ["id: 1", "event: RunAccepted", 'data: {"seq":1}', "", ": keep-alive", "", "id: 2"]
    lines += ["event: RunFinished", 'data: {"seq":2}', ""]
    events = list(parse_sse(iter(lines)))
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, "RunAccepted", {"seq": 1}),
        (2, "RunFinished", {"seq": 2}),
    ]


def test_a_child_that_keeps_exiting_is_restarted_with_the_backoff() -> None:
    out = io.StringIO()
    log = CombinedLog(["quick"], stream=out)
    sup = Supervisor([Spec("quick", ("db", "--help"))], log, {"PYTHONUNBUFFERED": "1"})
    child = sup.children[0]
    child.backoff = Backoff(first=0.05, cap=0.1)
    sup.start_all()
    try:

        def third_start() -> str | None:
            sup.tick()
            return None if child.starts >= 3 else f"{child.starts} starts"

        wait_until(third_start, timeout=60, what="three starts", interval=0.02)
    finally:
        sup.stop_all(grace=5)
    text = out.getvalue()
    assert text.count("quick (pid") >= 2 and "exited (exit code 0)" in text
    assert "quick restarted (pid" in text and "Usage:" in text  # the child's own output
    assert sup.processes()[0]["restarts"] >= 2
    assert child.popen is not None and child.popen.returncode is not None

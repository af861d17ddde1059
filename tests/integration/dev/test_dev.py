"""`runcoord dev --sim` as a user runs it: one command brings the product up, a turn posted over
HTTP completes, a process killed with -9 comes back, a second `runcoord dev` refuses to start,
and Ctrl-C leaves none of its processes behind (checked by pid).

It runs beside the shared stack and everything else: its own API, simulator and metrics ports,
its own topic prefix (and so its own consumer groups), its own folder for dev.lock and
dev.json (--run-dir), and the servers named explicitly, so `stack up` only checks them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from runcoord.config import Settings
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from runcoord.stack.procs import cmdline
from runcoord.topics import delete as delete_topics
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration

PROCESSES = {
    "sim-provider",
    "sim-tools",
    "coord-0",
    "coord-1",
    "exec",
    "projector",
    "relay",
    "api",
}


@dataclass
class Dev:
    """One `runcoord dev` under test, and every pid it ever reported (with a marker from its
    command line, so a pid reused by someone else's process is not mistaken for ours)."""

    argv: list[str]
    env: dict[str, str]
    run_dir: Path
    log: Path
    prefix: str
    popen: subprocess.Popen[bytes] | None = None
    seen: dict[int, str] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.run_dir / "dev.json"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # our SIGINT is the terminal's Ctrl-C, to it alone
            )

    def tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        for p in data.get("processes", []):
            if p.get("pid"):
                self.seen[int(p["pid"])] = _marker(p["name"], data, self.prefix)
        return dict(data)

    def wait_state(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def probe() -> str | None:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"runcoord dev exited {self.popen.returncode}:\n{self.tail()}")
            data = self.state()
            if data is None:
                return "no dev.json yet"
            reason: str | None = check(data)
            if reason is None:
                found.update(data)
            return reason

        wait_until(probe, timeout=timeout, what=what, interval=0.2)
        return found

    def ours_alive(self) -> list[str]:
        """The pids it reported that still run what we started."""
        left = []
        for pid, marker in self.seen.items():
            line = cmdline(pid)
            if line is not None and "runcoord.cli" in line and marker in line:
                left.append(f"{pid}: {line}")
        return left


def _marker(name: str, data: dict[str, Any], prefix: str) -> str:
    # The simulators take no topic prefix; their port is theirs alone.
    if name == "sim-provider":
        return f"--port {data['provider_url'].rsplit(':', 1)[1].removesuffix('/v1')}"
    if name == "sim-tools":
        return f"--port {data['gateway_url'].rsplit(':', 1)[1]}"
    return f"--topic-prefix {prefix}"


@pytest.fixture
def dev(settings: Settings, tmp_path: Path, unique: str, bootstrap: str) -> Iterator[Dev]:
    prefix = f"t{unique}."
    env = {
        **os.environ,
        # The running stack, named: `stack up` checks these and starts nothing.
        "RUNCOORD_BOOTSTRAP_SERVERS": settings.bootstrap,
        "RUNCOORD_POSTGRES_DSN": settings.dsn,
        "RUNCOORD_REDIS_URL": settings.redis,
    }
    env.pop("RUNCOORD_METRICS_PORT", None)
    run_dir = tmp_path / "dev"
    ports = [free_port() for _ in range(3)]
    argv = [sys.executable, "-m", "runcoord.cli", "dev", "--sim", "--run-dir", str(run_dir)]
    argv += ["--api-port", str(ports[0]), "--sim-provider-port", str(ports[1])]
    argv += ["--sim-tools-port", str(ports[2]), "--metrics-port-base", "0"]
    argv += ["--topic-prefix", prefix]
    handle = Dev(argv, env, run_dir, tmp_path / "dev.log", prefix)
    try:
        yield handle
    finally:
        if handle.popen is not None and handle.popen.poll() is None:
            handle.popen.send_signal(signal.SIGINT)
            try:
                handle.popen.wait(30)
            except subprocess.TimeoutExpired:
                handle.popen.kill()
                handle.popen.wait(10)
        for entry in handle.ours_alive():  # a failed test must not leave ours behind either
            os.killpg(int(entry.split(":", 1)[0]), signal.SIGKILL)
        delete_topics(bootstrap, list(TopicNames.with_prefix(prefix).all()))


def post_turn(api: str, key: str, thread: str, text: str) -> str:
    answer = httpx.post(
        f"{api}/v1/threads/{thread}/turns",
        json={"input": text},
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["run_id"])


def metrics_up(url: str) -> str | None:
    try:
        status = httpx.get(url, timeout=5).status_code
    except httpx.TransportError as exc:
        return repr(exc)
    return None if status == 200 else f"HTTP {status}"


def wait_completed(dev: Dev, api: str, key: str, run_id: str, timeout: float = 60) -> None:
    seen: dict[str, Any] = {}

    def finished() -> str | None:
        assert dev.popen is not None and dev.popen.poll() is None, dev.tail()
        got = httpx.get(
            f"{api}/v1/runs/{run_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert got.status_code == 200, got.text
        seen.update(got.json())
        return None if seen["finished_at"] else f"status {seen['status']}"

    wait_until(finished, timeout=timeout, what=f"run {run_id} finished")
    assert seen["status"] == "completed", (seen, dev.tail())


def test_dev_sim_runs_the_product_restarts_a_killed_process_and_stops_everything(
    dev: Dev,
) -> None:
    started = time.monotonic()
    dev.start()
    info = dev.wait_state(lambda d: None, timeout=120, what="dev.json")
    assert dev.popen is not None
    assert info["pid"] == dev.popen.pid
    assert {p["name"] for p in info["processes"]} == PROCESSES
    assert all(p["running"] for p in info["processes"])
    api, key = info["api_url"], info["tenant_key"]
    assert key.startswith("rk_") and info["tenant"] == "t1"
    assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
    # "Up" means every process started; an executor serves its metrics once it has imported
    # its modules, a moment later.
    wait_until(
        lambda: metrics_up(info["metrics"]["exec"]),
        timeout=30,
        what="the executor's metrics",
    )
    log = dev.tail(100_000)
    assert "runcoord dev is up" in log and key in log

    def executor_logged() -> str | None:
        # Its first line ("… up, kinds …") comes once its clients are built, after its
        # metrics are served: shown in the combined log, prefixed by its name.
        lines = dev.tail(100_000).splitlines()
        return None if any(ln.startswith("exec") and "| " in ln for ln in lines) else "none"

    wait_until(executor_logged, timeout=30, what="the executor's lines in the combined log")

    # A conversation id of the user's own, never seen by the provider: runcoord creates
    # its provider conversation on the first turn and runs the second turn in it.
    thread = f"conv-{uuid.uuid4().hex[:12]}"
    run_id = post_turn(api, key, thread, "Open a ticket for my late order")
    wait_completed(dev, api, key, run_id)

    # kill -9 one child: the supervisor says so and starts it again (a new pid in dev.json).
    executor = next(p for p in info["processes"] if p["name"] == "exec")
    os.kill(executor["pid"], signal.SIGKILL)

    def restarted(data: dict[str, Any]) -> str | None:
        now = next(p for p in data["processes"] if p["name"] == "exec")
        if now["pid"] == executor["pid"] or not now["running"]:
            return f"exec still pid {now['pid']}"
        return None

    after = dev.wait_state(restarted, timeout=30, what="exec restarted")
    restarted_now = next(p for p in after["processes"] if p["name"] == "exec")
    assert restarted_now["restarts"] == 1 and cmdline(restarted_now["pid"]) is not None
    log = dev.tail(100_000)
    assert f"exec (pid {executor['pid']}) exited (killed by SIGKILL)" in log
    assert "restarting it in 1 s" in log
    # ...and the restarted executor does its work: a tool call on a new turn.
    second = post_turn(api, key, thread, "Again, please")
    wait_completed(dev, api, key, second)
    shown = httpx.get(
        f"{api}/v1/threads/{thread}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    assert {r["run_id"] for r in shown["runs"]} == {run_id, second}
    (provider_thread,) = shown["provider_threads"]  # one, used by both turns
    records = httpx.get(info["provider_url"].removesuffix("/v1") + "/_sim/records").json()
    made = [c for c in records["containers"] if c["metadata"] == {"runcoord_conversation": thread}]
    assert [c["id"] for c in made] == [provider_thread["id"]]

    # A second `runcoord dev` with the same folder refuses, naming the first.
    refused = subprocess.run(
        dev.argv, env=dev.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"runcoord dev is already running (pid {dev.popen.pid})" in refused.stderr
    assert dev.state_file.exists()  # the refused start touched nothing of the first's

    # Ctrl-C: every process it started goes, dev.json with them; the stack stays.
    dev.popen.send_signal(signal.SIGINT)
    assert dev.popen.wait(40) == 0, dev.tail()
    assert len(dev.seen) == len(PROCESSES) + 1  # every incarnation, the killed one too
    assert dev.ours_alive() == []
    assert not Path(f"/proc/{dev.popen.pid}").exists()
    assert not dev.state_file.exists()
    assert "the stack is still running (`runcoord stack down` stops it)" in dev.tail()
    assert time.monotonic() - started < 120

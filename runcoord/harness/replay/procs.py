"""The replay's own processes: start, kill -9, pause, restart and stop them, and count their CPU.

Only processes started here are ever signalled, by their pid. kill -9 is real
(``os.kill(pid, SIGKILL)``), and so are SIGSTOP/SIGCONT; CPU time is read from /proc before a
process goes away, so a replica's figure covers all of its incarnations (one that kills itself
at a fault point is read as it dies: :meth:`Replica.wait_exit`).

A replica can be *armed* (``RUNCOORD_FAULT_AT``, runcoord/faults.py: it kills or stops itself
at a named point) and can run behind a *prefix* (``unshare --net … netpart``: in a network
namespace of its own, runcoord/harness/replay/netpart.py); both apply from its next start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (Linux /proc), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Replica:
    name: str  # coord-0, exec-tools-0, base-1, sim-provider, ...
    role: str  # coordinator, executor-tools, ..., infra
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    cpu_done: float = 0.0  # CPU of incarnations that ended
    starts: int = 0
    kills: int = 0
    down_on_purpose: bool = False  # killed by a fault, restart pending
    armed: str | None = None  # RUNCOORD_FAULT_AT for its next start; its death is planned
    prefix: list[str] = field(default_factory=list)  # argv before its own (a namespace)
    paused: bool = False  # SIGSTOPped by the harness, SIGCONT pending

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        env.pop("RUNCOORD_FAULT_AT", None)
        if self.armed:
            env["RUNCOORD_FAULT_AT"] = self.armed
        with self.log.open("ab") as out:
            armed = f" armed {self.armed}" if self.armed else ""
            out.write(
                f"===== harness: start {self.name}{armed} at {time.strftime('%T')} =====\n".encode()
            )
            out.flush()
            self.popen = subprocess.Popen(
                [*self.prefix, *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.starts += 1
        self.down_on_purpose = False
        self.paused = False

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def state(self) -> str | None:
        """The process's state letter from /proc (R, S, T: stopped, Z: exited, not reaped)."""
        if self.popen is None:
            return None
        try:
            return Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    def pause(self) -> bool:
        """SIGSTOP; True if it was running."""
        if not self.alive():
            return False
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGSTOP)
        self.paused = True
        return True

    def resume(self) -> bool:
        """SIGCONT; True if it was alive (stopped by the harness or by itself)."""
        self.paused = False
        if not self.alive():
            return False
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGCONT)
        return True

    def wait_exit(self, timeout: float, stop: threading.Event | None = None) -> int | None:
        """Wait until this incarnation exits (at most ``timeout`` s, or until ``stop`` is
        set); its exit code (-9: SIGKILL), or None if it still runs. Its CPU is read while it
        is a zombie, before it is reaped."""
        if self.popen is None:
            return None
        popen, deadline = self.popen, time.monotonic() + timeout
        while True:
            try:
                gone = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped elsewhere already (poll() in another thread)
                gone = None
                if popen.poll() is None:
                    popen.wait()
                self.down_on_purpose = True
                return popen.returncode
            if gone is not None:
                used = cpu_seconds(popen.pid) or 0.0
                popen.wait()
                self.cpu_done += used
                self.down_on_purpose = True
                return popen.returncode
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return None
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu(self) -> float:
        if self.alive():
            assert self.popen is not None
            return self.cpu_done + (cpu_seconds(self.popen.pid) or 0.0)
        return self.cpu_done

    def kill9(self) -> bool:
        """kill -9; True if it was running."""
        if not self.alive():
            return False
        assert self.popen is not None
        used = cpu_seconds(self.popen.pid) or 0.0
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self.cpu_done += used
        self.kills += 1
        self.down_on_purpose = True
        return True

    def stop(self, grace: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        used = cpu_seconds(self.popen.pid) or 0.0
        self.down_on_purpose = True
        self.paused = False
        self.popen.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
        self.popen.terminate()
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self.cpu_done += used

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""


class Supervisor:
    """The replicas of one replay, by name; ``role:index`` names map onto them."""

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.by_target: dict[str, str] = {}  # "coordinator:0" -> "coord-0"
        # What the plan set up before the first start (replay/faults.py ``stage``: armed
        # replicas, namespaces); the fault runner reads it. on_stop runs once all are stopped.
        self.staging: object | None = None
        self.on_stop: list[Callable[[], None]] = []

    def add(self, replica: Replica, target: str | None = None) -> Replica:
        self.replicas[replica.name] = replica
        if target is not None:
            self.by_target[target] = replica.name
        return replica

    def target(self, target: str) -> Replica | None:
        name = self.by_target.get(target)
        return None if name is None else self.replicas[name]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for target in self.by_target:
            role = target.partition(":")[0]
            out[role] = out.get(role, 0) + 1
        return out

    def start_all(self) -> None:
        for replica in self.replicas.values():
            replica.start()

    def dead(self) -> list[Replica]:
        """Replicas that exited by themselves (not the ones a fault killed and not yet back,
        nor armed ones: their death is the plan's, and the fault runner restarts them)."""
        return [
            r
            for r in self.replicas.values()
            if r.popen is not None and not r.armed and not r.alive() and not r.down_on_purpose
        ]

    def stop_all(self) -> None:
        try:
            for replica in reversed(list(self.replicas.values())):
                replica.stop()
        finally:
            while self.on_stop:
                self.on_stop.pop()()

    def cpu(self) -> dict[str, float]:
        return {name: round(r.cpu(), 2) for name, r in self.replicas.items()}


def python_argv(*args: str) -> list[str]:
    """``runcoord ARGS`` as a subprocess of this interpreter."""
    return [sys.executable, "-m", "runcoord.cli", *args]

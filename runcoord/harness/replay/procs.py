"""The replay's own processes: start, kill -9, restart and stop them, and count their CPU.

Only processes started here are ever signalled, by their pid. kill -9 is real
(``os.kill(pid, SIGKILL)``); CPU time is read from /proc before a process goes away, so a
replica's figure covers all of its incarnations.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"===== harness: start {self.name} at {time.strftime('%T')} =====\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        self.starts += 1
        self.down_on_purpose = False

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
        """Replicas that exited by themselves (not the ones a fault killed and not yet back)."""
        return [
            r
            for r in self.replicas.values()
            if r.popen is not None and not r.alive() and not r.down_on_purpose
        ]

    def stop_all(self) -> None:
        for replica in reversed(list(self.replicas.values())):
            replica.stop()

    def cpu(self) -> dict[str, float]:
        return {name: round(r.cpu(), 2) for name, r in self.replicas.items()}


def python_argv(*args: str) -> list[str]:
    """``runcoord ARGS`` as a subprocess of this interpreter."""
    return [sys.executable, "-m", "runcoord.cli", *args]

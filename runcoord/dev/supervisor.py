"""The processes `runcoord dev` starts: each one started, read, restarted and stopped here.

Every child is ``sys.executable -m runcoord.cli <command> …`` in a session (and process group)
of its own, so the terminal's Ctrl-C reaches only the supervisor, which then stops them in
order. One reader thread per child prints its stdout and stderr (merged) to the combined log.
The supervisor's thread calls :meth:`Supervisor.tick`: a child that exited while it was not
being stopped is restarted after a backoff (1 s, doubling to 30 s; back to 1 s once an
incarnation has stayed up 60 s), with one line saying which, how it ended, and when.

Only processes started here are ever signalled: a child's group is signalled while its
leader is still unreaped (so the group id cannot belong to anything else), then reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from runcoord.dev.logs import CombinedLog
from runcoord.stack.polling import Deadline

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Spec:
    """One product process: its name in the log and ``runcoord`` arguments."""

    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "runcoord.cli", *self.args]


class Backoff:
    """Delays between restarts: FIRST, doubling to MAX; FIRST again after a stable run."""

    def __init__(
        self, first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S, stable: float = STABLE_AFTER_S
    ) -> None:
        self.first, self.cap, self.stable = first, cap, stable
        self._next = first

    def after_exit(self, uptime: float) -> float:
        if uptime >= self.stable:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay


def how_it_ended(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


class Child:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.popen: subprocess.Popen[bytes] | None = None
        self.reader: threading.Thread | None = None
        self.started_at = 0.0
        self.starts = 0
        self.backoff = Backoff()
        self.restart_at: float | None = None  # monotonic time of the next start, when down

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def running(self) -> bool:
        """Started and not exited (checked without reaping it)."""
        if self.popen is None or self.popen.returncode is not None:
            return False
        try:
            gone = os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.popen.poll() is None
        return gone is None

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the child's process group; only while its leader is unreaped (ours)."""
        if self.popen is None or self.popen.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def reap(self) -> int:
        """The exit status of an exited child, after sweeping what is left of its group."""
        assert self.popen is not None
        self.signal_group(signal.SIGKILL)  # anything it started and left behind
        return self.popen.wait()


class Supervisor:
    def __init__(
        self,
        specs: Sequence[Spec],
        log: CombinedLog,
        env: Mapping[str, str],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.children = [Child(s) for s in specs]
        self.log = log
        self.env = dict(env)
        self.on_change = on_change  # a pid changed: dev.json is rewritten
        self.stopping = False

    def start_all(self) -> None:
        for child in self.children:
            self._start(child)
        self.on_change()

    def _start(self, child: Child) -> None:
        env = {**self.env, **child.spec.env}
        child.popen = subprocess.Popen(
            child.spec.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.starts += 1
        child.restart_at = None
        assert child.popen.stdout is not None
        child.reader = threading.Thread(
            target=self._read,
            args=(child.name, child.popen.stdout),
            name=f"dev-log-{child.name}",
            daemon=True,
        )
        child.reader.start()

    def _read(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.log.line(name, raw.decode(errors="replace").rstrip("\r\n"))

    def tick(self) -> None:
        """Notice children that exited, and start those whose backoff is over."""
        if self.stopping:
            return
        now, changed = time.monotonic(), False
        for child in self.children:
            if child.popen is not None and child.restart_at is None and not child.running():
                code = child.reap()
                uptime = now - child.started_at
                delay = child.backoff.after_exit(uptime)
                child.restart_at = now + delay
                self.log.say(
                    f"{child.name} (pid {child.pid}) exited ({how_it_ended(code)}) after "
                    f"{uptime:.1f} s; restarting it in {delay:.0f} s",
                    level="warning",
                    event="exited",
                    child=child.name,
                    pid=child.pid,
                    returncode=code,
                    uptime_s=round(uptime, 1),
                    restart_in_s=delay,
                )
            if child.restart_at is not None and now >= child.restart_at:
                old = child.pid
                self._start(child)
                changed = True
                self.log.say(
                    f"{child.name} restarted (pid {child.pid}, was {old}; restart "
                    f"{child.starts - 1})",
                    event="restarted",
                    child=child.name,
                    pid=child.pid,
                    restarts=child.starts - 1,
                )
        if changed:
            self.on_change()

    def dead(self) -> list[Child]:
        """Children that are down and waiting for their restart."""
        return [c for c in self.children if c.restart_at is not None]

    def stop_all(self, grace: float = STOP_GRACE_S, hurry: threading.Event | None = None) -> None:
        """SIGTERM every running child's group, wait up to ``grace`` (or until ``hurry`` is
        set), SIGKILL the groups still there; every child is reaped on return."""
        self.stopping = True
        live = [c for c in self.children if c.popen is not None and c.restart_at is None]
        for child in live:
            if child.running():
                child.signal_group(signal.SIGTERM)
                child.signal_group(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        deadline = Deadline(grace)
        pending = list(live)
        while pending and not deadline.expired() and not (hurry and hurry.is_set()):
            still = []
            for child in pending:
                if child.running():
                    still.append(child)
                else:
                    child.reap()
            pending = still
            if pending:
                time.sleep(0.05)
        for child in pending:
            if child.running():
                self.log.say(
                    f"{child.name} (pid {child.pid}) still running after {grace:.0f} s: SIGKILL",
                    level="warning",
                    event="killed",
                    child=child.name,
                    pid=child.pid,
                )
            child.signal_group(signal.SIGKILL)
            child.reap()
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=2)

    def processes(self) -> list[dict[str, Any]]:
        """Each child: name, pid (of the current incarnation), restarts, metrics port."""
        return [
            {
                "name": c.name,
                "pid": c.pid,
                "restarts": max(0, c.starts - 1),
                "running": c.restart_at is None and c.popen is not None,
                "metrics_port": c.spec.metrics_port,
            }
            for c in self.children
        ]

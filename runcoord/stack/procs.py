"""Processes the stack starts: detached spawning, pid files, identity checks, ports, log tails.

A pid file alone is not proof: after a reboot the pid may belong to anything. A pid counts as
ours only while its command line still contains a marker we chose (a path in the state
folder, or a port), so ``down`` can never signal a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from runcoord.stack.polling import Deadline


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def cmdline(pid: int) -> str | None:
    """The process's command line joined by spaces, or None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The state letter follows the parenthesised command name. Z: exited but not yet
        # waited for (a broker a fault test started and killed): it still answers
        # kill(pid, 0), so "is it alive?" must read the state. Its parent reaps it.
        if stat[stat.rindex(")") + 2] == "Z":
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def alive_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line has ``marker``."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    line = cmdline(pid)
    if line is None or marker not in line:
        return None
    return pid


def spawn_detached(
    argv: Sequence[str], *, log: Path, pid_file: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so Ctrl-C in our terminal does not reach it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A header per start, so a tail read during start-up is not mistaken for this run's.
        out.write(f"===== runcoord: starting at {time.strftime('%F %T')} =====\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def signal_and_wait(pid: int, sig: signal.Signals, *, timeout: float) -> bool:
    """Send ``sig`` and wait until the process is gone; True if it went within ``timeout``."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = Deadline(timeout)
    while cmdline(pid) is not None:
        if deadline.expired():
            return False
        time.sleep(0.1)
    return True


def stop_pid(pid: int, *, grace: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited after ``grace`` seconds."""
    stop_pids([pid], grace=grace)


def stop_pids(pids: Sequence[int], *, grace: float) -> list[int]:
    """SIGTERM all at once, SIGKILL those still alive after ``grace``; returns the killed ones.

    At once, because of a KRaft quorum: brokers stopped one by one leave the last without a
    majority, and its controlled shutdown then waits for a quorum that never comes back.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = Deadline(grace)
    while any(cmdline(pid) is not None for pid in pids) and not deadline.expired():
        time.sleep(0.1)
    stragglers = [pid for pid in pids if cmdline(pid) is not None]
    for pid in stragglers:
        signal_and_wait(pid, signal.SIGKILL, timeout=10)
    return stragglers


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def who_listens(port: int) -> str | None:
    """Best effort 'pid N: command line' of the process listening on ``port`` (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    line = cmdline(int(proc.name)) or "?"
                    # Both ends: a JVM's flags come first, what identifies it (a path) last.
                    short = line if len(line) <= 200 else f"{line[:90]} … {line[-100:]}"
                    return f"pid {proc.name}: {short}"
    return None


def tail_text(text: str, lines: int = 20, width: int = 300) -> str:
    """The last ``lines`` lines, each cut to ``width`` (Kafka logs lines of 5,000 characters)."""
    cut = [line if len(line) <= width else line[:width] + " …" for line in text.splitlines()]
    return "\n".join(cut[-lines:])


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a (possibly large) log file, or a note that it is missing."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024 * max(1, lines // 50 + 1)))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return tail_text(data, lines)

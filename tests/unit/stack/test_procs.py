"""Pid files, identity markers, stopping, port owners and deadlines, on real processes."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runcoord.errors import StackError
from runcoord.stack.polling import NotReadyInTime, wait_until
from runcoord.stack.procs import (
    alive_pid,
    cmdline,
    port_in_use,
    spawn_detached,
    stop_pids,
    tail,
    tail_text,
    who_listens,
)

# A process that ignores SIGTERM, so stop_pids has to escalate to SIGKILL.
STUBBORN = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); signal.pause()"
)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_pid_is_ours_only_while_its_command_line_has_the_marker(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    proc = spawn_detached(
        [sys.executable, "-c", "import signal; signal.pause()", str(tmp_path)],
        log=tmp_path / "x.log",
        pid_file=pid_file,
        cwd=tmp_path,
    )
    try:
        # Until the child has exec'd, /proc shows the parent's command line: wait for it.
        wait_until(
            lambda: None if alive_pid(pid_file, str(tmp_path)) == proc.pid else "not exec'd",
            timeout=10,
            what="the child to exec",
        )
        assert alive_pid(pid_file, "/somewhere/else") is None
        assert "starting at" in (tmp_path / "x.log").read_text()
    finally:
        assert stop_pids([proc.pid], grace=10) == []
    proc.wait(timeout=10)
    assert cmdline(proc.pid) is None
    assert alive_pid(pid_file, str(tmp_path)) is None  # stale pid file


def test_stop_escalates_to_sigkill_after_the_grace(tmp_path: Path) -> None:
    proc = spawn_detached(
        [sys.executable, "-c", STUBBORN],
        log=tmp_path / "y.log",
        pid_file=tmp_path / "y.pid",
        cwd=tmp_path,
    )
    log = tmp_path / "y.log"
    wait_until(  # its handler is installed once it says so
        lambda: None if "ready" in log.read_text() else "starting", timeout=10, what="process"
    )
    assert stop_pids([proc.pid], grace=1.0) == [proc.pid]
    assert proc.wait(timeout=10) == -9


def test_port_owner_is_named(listener: int) -> None:
    assert port_in_use(listener)
    owner = who_listens(listener)
    assert owner is not None and owner.startswith("pid ")
    assert who_listens(1) is None


def test_wait_until_reports_the_last_reason() -> None:
    with pytest.raises(
        NotReadyInTime, match=r"thing not ready within 0s \(last check: nope\)"
    ) as info:
        wait_until(lambda: "nope", timeout=0.3, what="thing")
    assert isinstance(info.value, StackError)


def test_tail_cuts_long_lines_and_reports_missing_files(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)) + "\n" + "x" * 1000 + "\n")
    assert tail(log, 2).splitlines()[0] == "line 99"
    assert tail(log, 1).endswith(" …") and len(tail(log, 1)) < 310
    assert "does not exist" in tail(tmp_path / "missing.log")
    assert tail_text("a\nb\nc", 2) == "b\nc"

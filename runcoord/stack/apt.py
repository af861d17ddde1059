"""Install a missing server from Debian's packages, when we are root and apt-get exists.

``apt-get update`` runs at most once per process, and installs never run concurrently
(PostgreSQL and Redis are prepared in parallel threads and dpkg takes a global lock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from runcoord.errors import StackError
from runcoord.stack.procs import tail_text

_lock = threading.Lock()
_updated = False


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install(package: str, *, why: str) -> None:
    """``apt-get install -y package`` (after one ``apt-get update``); StackError on failure."""
    global _updated
    if not can_install():
        raise StackError(f"{why}: install the Debian package {package!r} (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _lock:
        steps = [] if _updated else [["apt-get", "update"]]
        steps.append(["apt-get", "install", "-y", "--no-install-recommends", package])
        for argv in steps:
            run = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if run.returncode != 0:
                raise StackError(
                    f"{why}, and `{' '.join(argv)}` failed (exit {run.returncode}):\n"
                    + tail_text(run.stdout + run.stderr, 15)
                )
            if argv[1] == "update":
                _updated = True

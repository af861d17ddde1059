"""What `runcoord dev` keeps in its folder: the single-instance lock, ``dev.json`` for scripts,
and the local tenant's key.

The lock is an ``flock`` on ``dev.lock``, held on an open descriptor for the life of the
process: the kernel drops it when the process ends, however it ends, so a stale file never
blocks a new start. The pid written in it only names the holder in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import psycopg

from runcoord.api import keys
from runcoord.errors import RuncoordError

LOCK_FILE = "dev.lock"
STATE_FILE = "dev.json"
KEY_FILE = "dev-key.json"


class AlreadyRunning(RuncoordError):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"runcoord dev is already running (pid {pid if pid else 'unknown'})")
        self.pid = pid


class DevLock:
    """An exclusive, non-blocking flock on ``path`` with our pid in it; released on exit."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not inherited by children (Python's default): only this process holds the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd < 0:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = -1


def write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Replace ``path`` atomically: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def local_key(dsn: str, tenant: str, path: Path) -> tuple[str, bool]:
    """The local tenant's API key and whether it is new: the one saved in ``path`` while it is
    still valid for ``tenant`` (so scripts keep working across restarts), else a new one made
    with :func:`runcoord.api.keys.create` and saved there (mode 0600)."""
    saved = read_json(path) or {}
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        key = saved.get("tenant_key")
        if isinstance(key, str) and saved.get("tenant") == tenant == keys.tenant_for(conn, key):
            return key, False
        key = keys.create(conn, tenant)
    write_json(path, {"tenant": tenant, "tenant_key": key}, mode=0o600)
    return key, True

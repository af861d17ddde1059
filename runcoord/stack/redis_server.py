"""A local Redis server (daemonized by itself), its files under the state folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from runcoord.config import Settings
from runcoord.errors import StackError
from runcoord.stack import apt
from runcoord.stack.component import ComponentStatus, Say, require_free_port
from runcoord.stack.paths import StackPaths
from runcoord.stack.polling import NotReadyInTime, wait_until
from runcoord.stack.procs import alive_pid, stop_pid, tail, tail_text


def probe(url: str) -> str | None:
    """None when Redis at ``url`` answers PING."""
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    return None


class RedisServer:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.port = settings.redis_port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.home = StackPaths.of(settings).redis
        self.log = self.home / "redis.log"
        self.pid_file = self.home / "redis.pid"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        # Redis rewrites its process title to "redis-server 127.0.0.1:PORT".
        return alive_pid(self.pid_file, f"redis-server 127.0.0.1:{self.port}")

    def _binary(self, say: Say) -> str:
        found = shutil.which("redis-server")
        if found is None:
            say("redis: redis-server missing, installing the Debian package redis-server")
            apt.install("redis-server", why="Redis is not installed (or set RUNCOORD_REDIS_URL)")
            found = shutil.which("redis-server")
        if found is None:
            raise StackError("redis-server was installed but is not on PATH")
        return found

    def up(self, timeout: float, say: Say) -> None:
        pid = self.pid()
        if pid is not None:
            say(f"redis: already running (pid {pid}) at {self.address}")
        else:
            require_free_port(self.port, what="redis", setting="RUNCOORD_REDIS_PORT")
            binary = self._binary(say)
            self.home.mkdir(parents=True, exist_ok=True)
            argv = [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--daemonize", "yes",
                "--dir", str(self.home),
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.log),
                # Leases, limits and caches: nothing here must survive a restart, and
                # correctness never rests on Redis alone (DESIGN.md, "Redis, and why
                # correctness never rests on it"), so no snapshots.
                "--save", "",
                "--appendonly", "no",
            ]  # fmt: skip
            run = subprocess.run(argv, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise StackError(
                    f"redis-server failed to start (exit {run.returncode}):\n"
                    + tail_text(run.stdout + run.stderr)
                    + f"\n--- last lines of {self.log} ---\n{tail(self.log)}"
                )
            say(f"redis: started at {self.address}")
        try:
            wait_until(lambda: probe(self.url), timeout=timeout, what="redis")
        except NotReadyInTime as exc:
            raise StackError(f"{exc}\n--- last lines of {self.log} ---\n{tail(self.log)}") from None

    def down(self, say: Say) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        stop_pid(pid, grace=10)
        self.pid_file.unlink(missing_ok=True)
        say(f"redis: stopped (pid {pid})")

    def status(self) -> list[ComponentStatus]:
        pid = self.pid()
        problem = "stopped" if pid is None else probe(self.url)
        return [
            ComponentStatus(
                name=self.name,
                address=self.address,
                managed=True,
                pid=pid,
                healthy=problem is None,
                detail=problem or "answers PING",
                log=self.log,
            )
        ]

    def logs(self) -> dict[str, Path]:
        return {self.name: self.log}

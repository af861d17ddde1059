"""A local PostgreSQL server with its data under the state folder.

``initdb`` refuses to run as root, and sessions and CI run as root: then every PostgreSQL
command runs as the ``postgres`` user (``runuser``), which must own the data folder, the log
and the socket folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg

from runcoord.config import Settings
from runcoord.errors import StackError
from runcoord.stack import apt
from runcoord.stack.component import ComponentStatus, Say, require_free_port
from runcoord.stack.paths import StackPaths
from runcoord.stack.polling import NotReadyInTime, wait_until
from runcoord.stack.procs import alive_pid, stop_pid, tail, tail_text

_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes, and ".s.PGSQL.NNNNN" is appended


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin (Debian), else wherever pg_ctl is on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def probe(dsn: str) -> str | None:
    """None when PostgreSQL at ``dsn`` runs a query."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


class PostgresServer:
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.port = settings.postgres_port
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.home = StackPaths.of(settings).postgres
        self.data = self.home / "data"
        self.log = self.home / "server.log"
        run = self.home / "run"
        self.socket_dir = run if len(str(run)) < _SOCKET_PATH_MAX else Path("/tmp")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        # postmaster.pid is PostgreSQL's own pid file; its command line names our data folder.
        return alive_pid(self.data / "postmaster.pid", str(self.data))

    # ------------------------------------------------------------------ running as postgres
    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _argv(self, *argv: str | Path) -> list[str]:
        args = [str(a) for a in argv]
        return ["runuser", "-u", "postgres", "--", *args] if self._as_root() else args

    def _run(self, *argv: str | Path, what: str) -> None:
        run = subprocess.run(self._argv(*argv), capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise StackError(
                f"postgres: {what} failed (exit {run.returncode}):\n"
                + tail_text(run.stdout + run.stderr, 15)
                + f"\n--- last lines of {self.log} ---\n{tail(self.log, 15)}"
            )

    def _own_folders(self) -> None:
        for folder in (self.home, self.data, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)  # PostgreSQL refuses a data folder others can read
        if not self._as_root():
            return
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise StackError(
                "there is no 'postgres' user to run PostgreSQL as (initdb refuses root): "
                "install the Debian package postgresql, or set RUNCOORD_POSTGRES_DSN"
            ) from None
        # Not recursive: what is inside is created by the postgres user itself.
        for folder in (self.home, self.data, self.socket_dir):
            if folder != Path("/tmp"):
                os.chown(folder, user.pw_uid, user.pw_gid)
        reach = subprocess.run(self._argv("test", "-w", self.data), check=False)
        if reach.returncode != 0:
            raise StackError(
                f"the postgres user cannot write {self.data} (a parent folder is not "
                "traversable for it): set RUNCOORD_STATE_DIR to a folder it can reach, "
                "e.g. under /tmp"
            )

    def _bin_dir(self, say: Say) -> Path:
        found = find_bin_dir()
        if found is None:
            say("postgres: server binaries missing, installing the Debian package postgresql")
            apt.install(
                "postgresql",
                why="PostgreSQL is not installed (or set RUNCOORD_POSTGRES_DSN)",
            )
            found = find_bin_dir()
        if found is None:
            raise StackError("postgresql was installed but no pg_ctl was found afterwards")
        return found

    # ------------------------------------------------------------------ component
    def up(self, timeout: float, say: Say) -> None:
        pid = self.pid()
        if pid is not None:
            say(f"postgres: already running (pid {pid}) at {self.address}")
        else:
            require_free_port(self.port, what="postgres", setting="RUNCOORD_POSTGRES_PORT")
            bin_dir = self._bin_dir(say)
            self._own_folders()
            if not (self.data / "PG_VERSION").exists():
                self._run(
                    bin_dir / "initdb",
                    "-D",
                    self.data,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    what="initdb",
                )
                say(f"postgres: initialised {self.data}")
            options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            self._run(
                bin_dir / "pg_ctl",
                "-D",
                self.data,
                "-l",
                self.log,
                "-o",
                options,
                "-w",
                "-t",
                str(max(1, int(timeout))),
                "start",
                what="pg_ctl start",
            )
            say(f"postgres: started at {self.address}")
        try:
            wait_until(lambda: probe(self.dsn), timeout=timeout, what="postgres")
        except NotReadyInTime as exc:
            raise StackError(f"{exc}\n--- last lines of {self.log} ---\n{tail(self.log)}") from None

    def down(self, say: Say) -> None:
        pid = self.pid()
        if pid is None:
            return
        bin_dir = find_bin_dir()
        if bin_dir is not None:
            # Fast shutdown: roll back open sessions and stop; nothing here is a production load.
            self._run(bin_dir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", what="stop")
        else:
            stop_pid(pid, grace=30)
        say(f"postgres: stopped (pid {pid})")

    def status(self) -> list[ComponentStatus]:
        pid = self.pid()
        problem = "stopped" if pid is None else probe(self.dsn)
        return [
            ComponentStatus(
                name=self.name,
                address=self.address,
                managed=True,
                pid=pid,
                healthy=problem is None,
                detail=problem or "answers queries",
                log=self.log,
            )
        ]

    def logs(self) -> dict[str, Path]:
        return {self.name: self.log}

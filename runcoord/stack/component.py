"""What every part of the stack offers ``up``/``down``/``status``/``logs``, and shared checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runcoord.errors import StackError
from runcoord.stack.polling import wait_until
from runcoord.stack.procs import port_in_use, who_listens

Say = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    managed: bool  # started by this stack (False: an external server named in the settings)
    pid: int | None
    healthy: bool
    detail: str
    log: Path | None


class Component(Protocol):
    name: str

    def up(self, timeout: float, say: Say) -> None: ...

    def down(self, say: Say) -> None: ...

    def status(self) -> list[ComponentStatus]: ...

    def logs(self) -> dict[str, Path]: ...


def require_free_port(port: int, *, what: str, setting: str) -> None:
    """Refuse to start when a process that is not ours (no live pid file) holds our port."""
    if not port_in_use(port):
        return
    owner = who_listens(port) or "another process"
    raise StackError(
        f"port {port} ({what}) is already taken by {owner}, which this stack did not start: "
        f"stop it, or choose another port with {setting}"
    )


class ExternalService:
    """A server named in the settings (DSN, URL, bootstrap): checked, never started or stopped."""

    def __init__(
        self,
        name: str,
        address: str,
        probe: Callable[[], str | None],
        *,
        ready: Callable[[], str | None] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self._probe = probe  # cheap: for status
        self._ready = ready or probe  # thorough: what `up` waits for

    def up(self, timeout: float, say: Say) -> None:
        wait_until(self._ready, timeout=timeout, what=f"{self.name} at {self.address}")
        say(f"{self.name}: using the server at {self.address} (set in the environment)")

    def down(self, say: Say) -> None:
        say(f"{self.name}: external server at {self.address}, left alone")

    def status(self) -> list[ComponentStatus]:
        problem = self._probe()
        return [
            ComponentStatus(
                name=self.name,
                address=self.address,
                managed=False,
                pid=None,
                healthy=problem is None,
                detail=problem or "external, answering",
                log=None,
            )
        ]

    def logs(self) -> dict[str, Path]:
        return {}

"""The baseline (runcoord/harness/baseline) as a system under test: k replicas sharing the turns of
``<prefix>baseline.turns``; finishes come back on ``<prefix>baseline.done``."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path

from confluent_kafka import Message

from runcoord.harness.replay.procs import Replica, Supervisor
from runcoord.harness.systems.kafka_io import Follower, RememberingProducer
from runcoord.harness.systems.port import Finish, Outgoing


@dataclass
class BaselineSystem:
    bootstrap: str
    prefix: str
    folder: Path
    provider_url: str
    gateway_url: str
    tools_file: Path
    coordinators: int = 2
    name: str = "baseline"

    def topics(self) -> dict[str, int]:
        return {"baseline.turns": 6, "baseline.done": 1}

    def groups(self) -> dict[str, int]:
        return {f"{self.prefix}baseline": self.coordinators}

    def replicas(self, supervisor: Supervisor) -> None:
        for i in range(self.coordinators):
            name = f"base-{i}"
            argv = [
                sys.executable, "-m", "runcoord.harness.baseline", "--instance-id", name,
                "--bootstrap", self.bootstrap, "--prefix", self.prefix,
                "--provider-url", self.provider_url, "--gateway-url", self.gateway_url,
                "--tools", str(self.tools_file),
            ]  # fmt: skip
            logs = self.folder / "logs" / f"{name}.log"
            supervisor.add(Replica(name, "coordinator", argv, logs), f"coordinator:{i}")

    def transport(self) -> BaselineTransport:
        return BaselineTransport(self.bootstrap, self.prefix)


class BaselineTransport:
    def __init__(self, bootstrap: str, prefix: str) -> None:
        self._turns = RememberingProducer(bootstrap, f"{prefix}baseline.turns")
        self._done: deque[Finish] = deque()
        group = f"{prefix}harness-{time.time_ns()}"
        self._follower = Follower(bootstrap, group, [f"{prefix}baseline.done"], self._on)

    def _on(self, msg: Message) -> None:
        data = json.loads(msg.value() or b"{}")
        self._done.append(Finish(data["run_id"], data["status"], data.get("reason"), data["at"]))

    def send(self, run: Outgoing) -> None:
        # The baseline has no approvals: the approver's scripts stay with the harness.
        body = {f.name: getattr(run, f.name) for f in fields(run) if f.name != "approvals"}
        self._turns.send(run.run_id.encode(), json.dumps(body).encode())

    def finished(self) -> list[Finish]:
        out: list[Finish] = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def duplicate(self, pick: float, intents: bool) -> str:
        # The baseline has no intents topic: every forced duplicate is an input's.
        key = self._turns.resend(pick)
        return f"turn of {(key or b'').decode()}" if key else "nothing sent yet"

    def close(self) -> None:
        self._follower.close()
        self._turns.close()

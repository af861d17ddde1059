"""runcoord as a system under test: k coordinators and k executors (each hosting every kind,
or k of each kind when split), as real
``runcoord`` subprocesses; turns enter as Avro ``StartRun`` records on ``runs.inbox``, and a
run is finished when ``RunFinished`` appears in the journal (``runs.events``)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Message, Producer

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record, to_record
from runcoord.config import Settings
from runcoord.domain.inputs import ApprovalDecision, StartRun
from runcoord.harness.replay.procs import Replica, Supervisor, python_argv
from runcoord.harness.systems.approver import SimApprover
from runcoord.harness.systems.kafka_io import Follower, RememberingProducer
from runcoord.harness.systems.port import Finish, Outgoing
from runcoord.kafka import TopicNames, producer_config

EXECUTOR_KINDS = ("provider", "tools", "submissions")
# What the simulated approver reads from the journal.
APPROVER_EVENTS = frozenset({"StepOpened", "ApprovalRequested"})


@dataclass
class RuncoordSystem:
    bootstrap: str
    prefix: str
    folder: Path
    dsn: str
    provider_url: str
    gateway_url: str
    tools_file: Path
    coordinators: int = 2
    executors: int = 1
    # True: k replicas of each kind (`executor provider|tools|submissions`); False: k replicas
    # of `executor all`, each answering to every kind's fault targets (executor-tools:0…).
    split_executors: bool = False
    observe: str = Settings.model_fields["observe"].default  # the provider executors' --observe
    # True: each conversation's id is the tenant's own (StartRun.conversation) and runcoord
    # creates its provider thread (the agent API's way); False: the driver created it.
    conversations: bool = False
    # The coordinators' --approval-budget-ms (None: their default); replays with approvals
    # keep it short, so an undecided call is answered well within the turn's budget.
    approval_budget_ms: int | None = None
    # The run protocol the driver's turns name; written to the replicas' providers.yaml, as
    # a deployment would, so the executors build that adapter at start (provider/cli.py).
    protocol: str = "assistants"
    name: str = "runcoord"

    def topics(self) -> dict[str, int]:
        return {}

    def groups(self) -> dict[str, int]:
        # Names as runcoord/coordinator/cli.py (--group) and runcoord/effects/serve.py (serve)
        # make them.
        out = {f"{self.prefix}coordinator": self.coordinators}
        kinds = EXECUTOR_KINDS if self.split_executors else ("all",)
        out |= {f"{self.prefix}runcoord-executor-{k}": self.executors for k in kinds}
        return out

    def replicas(self, supervisor: Supervisor) -> None:
        # Every process reads the replay's registry (the provider executor offers its tools).
        providers_file = self.folder / "providers.yaml"
        providers_file.write_text(f"default: {self.protocol}\n")
        env = {
            "RUNCOORD_POSTGRES_DSN": self.dsn,
            "RUNCOORD_TOOLS_FILE": str(self.tools_file),
            "RUNCOORD_PROVIDERS_FILE": str(providers_file),
        }
        logs = self.folder / "logs"
        for i in range(self.coordinators):
            name = f"coord-{i}"
            argv = python_argv(
                "coordinator", "--instance-id", name, "--group", f"{self.prefix}coordinator",
                "--topic-prefix", self.prefix, "--tools", str(self.tools_file),
            )  # fmt: skip
            if self.approval_budget_ms is not None:
                argv += ["--approval-budget-ms", str(self.approval_budget_ms)]
            supervisor.add(
                Replica(name, "coordinator", argv, logs / f"{name}.log", env), f"coordinator:{i}"
            )
        tools = ["--gateway-url", self.gateway_url, "--registry", str(self.tools_file)]
        provider = ["--provider-url", self.provider_url]
        options = {
            "provider": [*provider, "--observe", self.observe],
            "tools": tools,
            "submissions": provider,
            "all": [*provider, "--observe", self.observe, *tools],
        }
        for kind in EXECUTOR_KINDS if self.split_executors else ("all",):
            for i in range(self.executors):
                name = f"exec-{kind}-{i}" if self.split_executors else f"exec-{i}"
                argv = python_argv(
                    "executor", kind, "--instance-id", name, "--topic-prefix", self.prefix,
                    *options[kind],
                )  # fmt: skip
                replica = Replica(name, f"executor-{kind}", argv, logs / f"{name}.log", env)
                supervisor.add(replica, f"executor-{kind}:{i}")
                if not self.split_executors:
                    # A plan's fault on one kind's executor lands on the replica hosting it.
                    for hosted in EXECUTOR_KINDS:
                        supervisor.by_target[f"executor-{hosted}:{i}"] = name

    def transport(self) -> RuncoordTransport:
        return RuncoordTransport(
            self.bootstrap, TopicNames.with_prefix(self.prefix), conversations=self.conversations
        )


def conversation_id() -> str:
    """A tenant's own conversation id (the driver's thread factory when runcoord creates the
    provider threads)."""
    return f"conv-{secrets.token_hex(8)}"


class RuncoordTransport:
    def __init__(self, bootstrap: str, topics: TopicNames, *, conversations: bool = False) -> None:
        self.topics = topics
        self.conversations = conversations
        self.codec = AvroCodec()
        self._inbox = RememberingProducer(bootstrap, topics.inbox)
        self._raw = Producer(producer_config(bootstrap))
        self._done: deque[Finish] = deque()
        self._intents: deque[Message] = deque(maxlen=5000)
        self._lock = threading.Lock()
        self.events_seen = 0
        group = f"{topics.inbox.removesuffix('runs.inbox')}harness-{time.time_ns()}"
        self.approver = SimApprover(self._send_decision)
        self._follower = Follower(bootstrap, group, [topics.events, topics.effects], self._on)

    def _on(self, msg: Message) -> None:
        if msg.topic() == self.topics.effects:
            with self._lock:
                self._intents.append(msg)
            return
        self.events_seen += 1
        value = msg.value()
        if value is None:
            return
        name, datum = self.codec.decode(value)
        if name in APPROVER_EVENTS:
            self.approver.on_event(from_record(name, datum))
        if name != "RunFinished":
            return
        event = from_record(name, datum)
        self._done.append(Finish(event.run_id, event.status, event.reason, event.at_ms / 1000))

    def _send_decision(self, decision: ApprovalDecision) -> None:
        name, datum = to_record(decision)
        self._inbox.send(decision.run_id.encode(), self.codec.encode(name, datum))

    def send(self, run: Outgoing) -> None:
        start = StartRun(
            run.run_id, run.tenant, run.thread_id, run.assistant_id, run.provider, run.input,
            int(time.time() * 1000), run.metadata, conversation=self.conversations,
        )  # fmt: skip
        self.approver.expect(run.run_id, run.tenant, run.approvals)
        name, datum = to_record(start)
        self._inbox.send(run.run_id.encode(), self.codec.encode(name, datum))

    def finished(self) -> list[Finish]:
        out: list[Finish] = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def duplicate(self, pick: float, intents: bool) -> str:
        with self._lock:
            chosen = (
                self._intents[min(len(self._intents) - 1, int(pick * len(self._intents)))]
                if intents and self._intents and pick < 0.5
                else None
            )
        if chosen is not None:
            # The same bytes, key and headers (executors filter on the kind header).
            self._raw.produce(
                self.topics.effects, chosen.value(), chosen.key(), headers=chosen.headers() or []
            )
            self._raw.poll(0)
            return f"intent of {(chosen.key() or b'').decode()}"
        key = self._inbox.resend(pick)
        return f"StartRun of {(key or b'').decode()}" if key else "nothing sent yet"

    def close(self) -> None:
        self.approver.close()
        self._follower.close()
        self._inbox.close()
        self._raw.flush(30)

"""The scripted World, with a test's hands on it: held tool calls, raw records, dead letters.

`Driver` extends `World` (a scripted provider and executors answering the coordinator's
intents through Kafka) with what bad-input tests need:

- tool calls of chosen runs are *held*: the test answers them itself, right or wrong;
- so may be the creation of chosen runs' provider runs (``hold_create``): until the test
  releases it, such a run has no provider run;
- tool calls may be left to a real tool executor (``executor_tools``), the world only
  watching them go by;
- any bytes can be produced onto any topic (corrupt Avro, foreign schemas, tombstones);
- it reads ``runs.dlq`` and keeps every run's whole journal, so a test can wait for a dead
  letter, an output or a finished run with a deadline (never a fixed sleep).

Tool call ids carry the run id, so a call id of one run is never valid in another.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message

from runcoord.codec.wire import from_record, to_record
from runcoord.deadletter import DeadLetter
from runcoord.domain import ToolCall
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.errors import SerializationError
from runcoord.kafka import TopicNames, consumer_config
from runcoord.partitioning import partition_for
from runcoord.stack.polling import wait_until
from tests.integration.coordinator.world import ProviderRun, World


@dataclass(frozen=True)
class Sent:
    partition: int  # where it landed: the consumer of this partition must keep going
    value: bytes


@dataclass
class ScriptedRun(ProviderRun):
    run_id: str = ""

    def calls(self) -> tuple[ToolCall, ...]:
        if self.status != "requires_action":
            return ()
        return tuple(
            ToolCall(f"call_{self.run_id}_{self.step}_{i}", name, '{"q": "x"}')
            for i, name in enumerate(self.script[self.step])
        )


class Driver(World):
    def __init__(self, bootstrap: str, topics: TopicNames, *, executor_tools: bool = False) -> None:
        super().__init__(bootstrap, topics)
        self.executor_tools = executor_tools
        self.hold: set[str] = set()  # runs whose tool calls the test answers itself
        self.held: dict[tuple[str, str], it.ToolCallIntent] = {}
        self.hold_create: set[str] = set()  # runs whose create intent the test releases
        self.held_creates: dict[str, it.CreateRunIntent] = {}
        self.letters: list[DeadLetter] = []
        self.events_of: dict[str, list[ev.JournalEvent]] = defaultdict(list)
        self.tenants: dict[str, str] = {}
        self.dlq = Consumer(consumer_config(bootstrap, f"driver-dlq-{uuid.uuid4().hex}"))
        self.dlq.subscribe([topics.dlq])
        meta = self.dlq.list_topics(topics.inbox, timeout=10)
        self.partitions = len(meta.topics[topics.inbox].partitions)

    def close(self) -> None:
        self.dlq.close()
        super().close()

    # -- driving --------------------------------------------------------------------------

    def start_runs(
        self,
        scripts: dict[str, list[list[str]]],
        *,
        tenant: str = "t1",
        hold: bool = False,
        hold_create: bool = False,
    ) -> None:
        for run_id, script in scripts.items():
            self.runs[run_id] = ScriptedRun(script, run_id=run_id)
            self.tenants[run_id] = tenant
            if hold:
                self.hold.add(run_id)
            if hold_create:
                self.hold_create.add(run_id)
            self.send(
                inp.StartRun(run_id, tenant, f"th_{run_id}", "asst", "assistants", "hello", 0)
            )
        self.producer.flush(10)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> int:
        """Produce raw bytes and return the partition they landed on."""
        landed: list[int] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            landed.append(msg.partition() or 0)

        kwargs: dict[str, Any] = {"on_delivery": delivered, "headers": headers or []}
        if partition is not None:
            kwargs["partition"] = partition
        self.producer.produce(topic, value, key, **kwargs)
        self.producer.flush(10)
        assert landed, "not delivered"
        return landed[0]

    def inject(self, message: Any, *, key: str | None = None, partition: int | None = None) -> Sent:
        """Produce one domain message onto runs.inbox (keyed by its run unless told otherwise)."""
        name, datum = to_record(message)
        value = self.codec.encode(name, datum)
        landed = self.produce(
            self.topics.inbox, value, (key or message.run_id).encode(), partition=partition
        )
        return Sent(landed, value)

    def held_create(self, run_id: str, timeout: float = 60) -> it.CreateRunIntent:
        """The create intent of a ``hold_create`` run, once the coordinator emitted it."""

        def emitted() -> str | None:
            return None if run_id in self.held_creates else "no create intent yet"

        self.until(emitted, f"the create intent of {run_id}", timeout)
        return self.held_creates[run_id]

    def release_create(self, run_id: str) -> None:
        """The provider run of a ``hold_create`` run now exists: report it."""
        intent = self.held_create(run_id)
        self.hold_create.discard(run_id)
        self.send(
            inp.RunCreated(run_id, intent.effect_key, f"prov_{run_id}", "queued", None, False)
        )
        self.producer.flush(10)

    def current_watch(self, run_id: str) -> int:
        """The run's current watch as its journal read so far says (the last watch starter)."""
        starters = [e.seq for e in self.events_of[run_id] if isinstance(e, ev.WATCH_STARTERS)]
        return max(starters, default=0)

    def expire(self, run_id: str) -> None:
        """The provider expires the run; a watch waiting on it reports so."""
        self.runs[run_id].status = "expired"
        if run_id in self.waiting:
            self._observed(self.waiting.pop(run_id))
        self.producer.flush(10)

    def result(
        self, intent: it.ToolCallIntent, output: str = '{"ok":true}', **changes: Any
    ) -> inp.ToolResult:
        """The right answer to a held call, with ``changes`` made to it (to make it wrong)."""
        fields: dict[str, Any] = {
            "run_id": intent.run_id,
            "tenant": intent.tenant,
            "step_id": intent.step_id,
            "tool_call_id": intent.tool_call_id,
            "output": output,
            "is_error": False,
            "source": "tool",
            "effect_key": intent.effect_key,
        }
        fields.update(changes)
        return inp.ToolResult(**fields)

    def answer(self, intent: it.ToolCallIntent, output: str = '{"ok":true}') -> None:
        self.send(self.result(intent, output))
        self.producer.flush(10)

    def header_of(self, name: str) -> bytes:
        """The single-object header (marker and fingerprint) of a record's current schema."""
        return b"\xc3\x01" + self.codec.fingerprint(name)

    def partition_of(self, run_id: str) -> int:
        return partition_for(run_id, self.partitions)

    def run_on_partition(self, partition: int, tag: str) -> str:
        """A fresh run id whose records land on ``partition`` (to prove its consumer lives)."""
        i = 0
        while partition_for(f"{tag}-{i}", self.partitions) != partition:
            i += 1
        return f"{tag}-{i}"

    # -- waiting --------------------------------------------------------------------------

    def until(self, check: Callable[[], str | None], what: str, timeout: float = 60) -> None:
        def pumped() -> str | None:
            self.pump_once()
            return check()

        wait_until(pumped, timeout=timeout, what=what, interval=0.01)

    def held_calls(self, run_id: str, n: int, timeout: float = 60) -> list[it.ToolCallIntent]:
        def ready() -> str | None:
            got = [i for (r, _), i in self.held.items() if r == run_id]
            return None if len(got) >= n else f"{len(got)} of {n} held"

        self.until(ready, f"{n} tool calls of {run_id}", timeout)
        return sorted(
            (i for (r, _), i in self.held.items() if r == run_id), key=lambda i: i.tool_call_id
        )

    def letter(self, key: str, timeout: float = 60) -> DeadLetter:
        def found() -> str | None:
            return None if any(d.key == key for d in self.letters) else "no dead letter yet"

        self.until(found, f"a dead letter keyed {key}", timeout)
        return next(d for d in self.letters if d.key == key)

    def finish(self, run_id: str, timeout: float = 60) -> str:
        def done() -> str | None:
            return None if run_id in self.finished else "not finished"

        self.until(done, f"run {run_id} finished", timeout)
        return self.finished[run_id]

    def finish_or_none(self, run_id: str) -> str | None:
        self.pump_once()
        return self.finished.get(run_id)

    def recorded(self, run_id: str, tool_call_id: str, timeout: float = 60) -> ev.Event:
        def output() -> ev.ToolOutputRecorded | None:
            for e in self.events_of[run_id]:
                if isinstance(e, ev.ToolOutputRecorded) and e.output.tool_call_id == tool_call_id:
                    return e
            return None

        self.until(lambda: None if output() else "no output yet", f"output of {tool_call_id}")
        found = output()
        assert found is not None
        return found

    def step_opened(self, run_id: str, step_id: str, timeout: float = 60) -> None:
        def opened() -> str | None:
            for e in self.events_of[run_id]:
                if isinstance(e, ev.StepOpened) and e.step_id == step_id:
                    return None
            return "not open"

        self.until(opened, f"{run_id} {step_id} open", timeout)

    def ignored(self, run_id: str) -> list[str]:
        return [e.reason for e in self.events_of[run_id] if isinstance(e, ev.InputIgnored)]

    # -- pumping --------------------------------------------------------------------------

    def pump_once(self) -> None:
        for msg in self.effects.consume(500, 0.05):
            intent = self._decoded(msg)
            if intent is not None and intent.run_id in self.runs:
                self._answer(intent)
        self.producer.poll(0)
        for msg in self.events.consume(1000, 0.02):
            event = self._decoded(msg)
            if event is None:
                continue
            self.events_of[event.run_id].append(event)
            self.journal[event.run_id].append((event.seq, type(event).__name__))
            if isinstance(event, ev.RunFinished):
                self.finished[event.run_id] = event.status
        for msg in self.dlq.consume(100, 0.02):
            letter = self._decoded(msg)
            if isinstance(letter, DeadLetter):
                self.letters.append(letter)

    def _decoded(self, msg: Message) -> Any:
        if msg.error() is not None:
            return None
        try:
            name, datum = self.codec.decode(msg.value() or b"")
            return from_record(name, datum)
        except SerializationError:
            return None  # a test's own garbage on the topic: the product must cope, not us

    def _answer(self, intent: it.EffectIntent) -> None:
        if isinstance(intent, it.CreateRunIntent) and intent.run_id in self.hold_create:
            self.intents.append(intent)
            self.held_creates[intent.run_id] = intent
            return
        if isinstance(intent, it.ToolCallIntent):
            if self.executor_tools:
                self.intents.append(intent)  # a real tool executor answers it
                return
            if intent.run_id in self.hold:
                self.intents.append(intent)
                self.held[(intent.run_id, intent.tool_call_id)] = intent
                return
        super()._answer(intent)

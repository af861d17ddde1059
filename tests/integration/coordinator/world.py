"""A scripted provider and executors that answer the coordinator's intents through Kafka.

It stands where the real executors will stand, so the coordinator under test is the real
one: real broker, real transactions, real consumer groups. The world records every intent it
reads with read_committed, which is what the exactly-once claims are checked against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record, to_record
from runcoord.domain import ToolCall
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.kafka import TopicNames, consumer_config, producer_config

TOOLS = Path(__file__).resolve().parents[2] / "fixtures" / "tools.yaml"


@dataclass
class ProviderRun:
    script: list[list[str]]  # per step, the tool names called
    status: str = "queued"
    step: int = -1
    submissions: Counter[str] = field(default_factory=Counter)

    @property
    def step_id(self) -> str | None:
        return f"step_{self.step}" if self.status == "requires_action" else None

    def calls(self) -> tuple[ToolCall, ...]:
        if self.status != "requires_action":
            return ()
        return tuple(
            ToolCall(f"call_{self.step}_{i}", name, "{}")
            for i, name in enumerate(self.script[self.step])
        )

    def advance(self) -> None:
        if self.step + 1 < len(self.script):
            self.step += 1
            self.status = "requires_action"
        else:
            self.status = "completed"


class World:
    def __init__(self, bootstrap: str, topics: TopicNames, tenant: str = "t1") -> None:
        self.topics = topics
        self.tenant = tenant
        self.codec = AvroCodec()
        self.producer = Producer(producer_config(bootstrap))
        group = f"world-{os.getpid()}-{time.monotonic_ns()}"
        self.effects = Consumer(consumer_config(bootstrap, group))
        self.effects.subscribe([topics.effects])
        self.events = Consumer(consumer_config(bootstrap, group + "-events"))
        self.events.subscribe([topics.events])
        self.runs: dict[str, ProviderRun] = {}
        self.intents: list[it.EffectIntent] = []
        self.journal: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.finished: dict[str, str] = {}
        self.waiting: dict[str, it.ObserveRunIntent] = {}

    def close(self) -> None:
        self.effects.close()
        self.events.close()
        self.producer.flush(10)

    # -- driving ------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        name, datum = to_record(message)
        self.producer.produce(
            self.topics.inbox, self.codec.encode(name, datum), message.run_id.encode()
        )

    def start(self, scripts: dict[str, list[list[str]]]) -> None:
        for run_id, script in scripts.items():
            self.runs[run_id] = ProviderRun(script)
            self.send(
                inp.StartRun(run_id, self.tenant, f"th_{run_id}", "asst", "assistants", "hello", 0)
            )
        self.producer.flush(10)

    def pump(self, until_done: float) -> None:
        """Answer intents and read the journal until every run finished or time is up."""
        deadline = time.monotonic() + until_done
        while len(self.finished) < len(self.runs) and time.monotonic() < deadline:
            for msg in self.effects.consume(500, 0.1):
                if msg.error() is None:
                    name, datum = self.codec.decode(msg.value())
                    self._answer(from_record(name, datum))
            self.producer.poll(0)
            for msg in self.events.consume(1000, 0.05):
                if msg.error() is None:
                    name, datum = self.codec.decode(msg.value())
                    event = from_record(name, datum)
                    self.journal[event.run_id].append((event.seq, name))
                    if name == "RunFinished":
                        self.finished[event.run_id] = event.status
        self.producer.flush(10)

    def _answer(self, intent: it.EffectIntent) -> None:
        self.intents.append(intent)
        run = self.runs[intent.run_id]
        match intent:
            case it.CreateRunIntent():
                self.send(
                    inp.RunCreated(
                        intent.run_id,
                        intent.effect_key,
                        f"prov_{intent.run_id}",
                        "queued",
                        None,
                        False,
                    )
                )
            case it.ObserveRunIntent():
                if run.status == "queued":
                    run.advance()
                if (run.status, run.step_id) == (intent.since_status, intent.since_step):
                    self.waiting[intent.run_id] = intent  # a real watch keeps polling
                else:
                    self._observed(intent)
            case it.ToolCallIntent():
                output = json.dumps({"tool": intent.tool, "call": intent.tool_call_id})
                self.send(
                    inp.ToolResult(
                        intent.run_id,
                        intent.tenant,
                        intent.step_id,
                        intent.tool_call_id,
                        output,
                        False,
                        "tool",
                        intent.effect_key,
                    )
                )
            case it.SubmitOutputsIntent():
                outcome = "run_moved_on"
                if run.status == "requires_action" and run.step_id == intent.step_id:
                    run.submissions[intent.step_id] += 1
                    run.status = "queued"
                    outcome = "submitted"
                self.send(
                    inp.SubmissionResult(
                        intent.run_id, intent.effect_key, intent.step_id, outcome, 1, None
                    )
                )
                if intent.run_id in self.waiting:
                    self._observed(self.waiting.pop(intent.run_id))
            case it.CancelRunIntent():
                run.status = "cancelled"

    def _observed(self, watch: it.ObserveRunIntent) -> None:
        run = self.runs[watch.run_id]
        self.send(
            inp.RunObserved(
                watch.run_id, watch.watch, run.status, run.step_id, run.calls(), None, None, True
            )
        )

    # -- what happened --------------------------------------------------------------------

    def duplicate_keys(self) -> list[str]:
        counts = Counter(i.effect_key for i in self.intents)
        return [k for k, n in counts.items() if n > 1]

    def gaps(self) -> dict[str, list[int]]:
        """Runs whose journal is not exactly 1..n."""
        return {
            run: seqs
            for run, entries in self.journal.items()
            if (seqs := [s for s, _ in entries]) != list(range(1, len(seqs) + 1))
        }


def start_coordinator(
    topics_prefix: str,
    instance: str,
    log: Path,
    *,
    fault_at: str | None = None,
    group: str | None = None,
    extra: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("RUNCOORD_FAULT_AT", None)
    env.update(env_extra or {})
    if fault_at:
        env["RUNCOORD_FAULT_AT"] = fault_at
    cmd = [
        sys.executable,
        "-m",
        "runcoord.cli",
        "coordinator",
        "--topic-prefix",
        topics_prefix,
        "--instance-id",
        instance,
        "--group",
        group or f"{topics_prefix}coord",
        "--tools",
        str(TOOLS),
        "--session-timeout-ms",
        "6000",
        "--max-poll-interval-ms",
        "7000",
        "--stats-every-s",
        "2",
        *(extra or []),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

"""Synthetic journals: runs' events and intents as the coordinator would write them, encoded
up front and produced in bulk, for the projector's tests and the 1M-event bench.

Runs are interleaved (many in flight at once), so a run's records are spread over its
partition like in production, not stored back to back.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.domain import events as ev
from runcoord.domain import intents as it
from runcoord.domain.ids import effect_key, payload_hash
from runcoord.domain.model import Output, ToolCall
from runcoord.kafka import TopicNames
from runcoord.partitioning import partition_for

TOOLS = ("lookup_customer", "create_ticket", "send_email", "update_crm")


@dataclass(frozen=True, slots=True)
class Encoded:
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    tenant: str
    thread_id: str
    input: str
    calls: tuple[ToolCall, ...]
    start_ms: int


def run_messages(spec: RunSpec) -> list[ev.JournalEvent | it.EffectIntent]:
    """One completed run: accepted, created, one step with its calls answered, submitted."""
    r, t = spec.run_id, spec.start_ms
    key = {"tenant": spec.tenant, "thread_id": spec.thread_id, "run_id": r}
    base: dict[str, Any] = {"run_id": r, "tenant": spec.tenant, "thread_id": spec.thread_id}
    create = effect_key(**key, step="", tool_call_id="", kind="create_run")
    out: list[ev.JournalEvent | it.EffectIntent] = []
    seq = 0

    def event(cls: type[Any], at: int, **fields: Any) -> None:
        nonlocal seq
        seq += 1
        out.append(cls(run_id=r, seq=seq, at_ms=t + at, **fields))

    event(
        ev.RunAccepted,
        0,
        tenant=spec.tenant,
        thread_id=spec.thread_id,
        assistant_id="asst",
        provider="assistants",
        input=spec.input,
        run_deadline_ms=t + 600_000,
        create_key=create,
    )
    out.append(
        it.CreateRunIntent(
            **base, effect_key=create, provider="assistants", assistant_id="asst", input=spec.input
        )
    )
    event(
        ev.ProviderRunCreated,
        300,
        provider_run_id=f"pr_{r}",
        status="queued",
        expires_at_ms=None,
        reconciled=False,
    )
    event(
        ev.StepOpened,
        700,
        step_id=f"step_{r}",
        calls=spec.calls,
        deadline_ms=t + 60_700,
        expires_at_ms=None,
    )
    for i, call in enumerate(spec.calls):
        ek = effect_key(**key, step=f"step_{r}", tool_call_id=call.id, kind="tool_call")
        out.append(
            it.ToolCallIntent(
                **base,
                effect_key=ek,
                provider="assistants",
                step_id=f"step_{r}",
                tool_call_id=call.id,
                tool=call.name,
                arguments=call.arguments,
                deadline_ms=t + 60_700,
            )
        )
        text = '{"ok": true}'
        event(
            ev.ToolOutputRecorded,
            900 + 100 * i,
            step_id=f"step_{r}",
            output=Output(call.id, text, False, "tool", payload_hash(text)),
            effect_key=ek,
        )
    submit = effect_key(**key, step=f"step_{r}", tool_call_id="", kind="submit_outputs")
    event(ev.SubmissionRequested, 1500, step_id=f"step_{r}", effect_key=submit, reason="complete")
    event(ev.StepSubmitted, 1800, step_id=f"step_{r}", outcome="submitted", attempts=1)
    event(ev.RunFinished, 2500, status="completed", reason=None)
    return out  # fmt: skip


# Every id of a templated run carries this token; each copy replaces it with its own number.
# Fixed width, so the Avro length prefixes stay right.
TOKEN = b"0000000"


def template_specs(start_ms: int) -> list[RunSpec]:
    """One run per shape (1 to 4 tool calls), with every id carrying TOKEN."""
    n = TOKEN.decode()
    return [
        RunSpec(
            f"b-{n}",
            "t1",
            f"th_{n}",
            "help me",
            tuple(
                ToolCall(f"call_{n}_{i}", TOOLS[i % len(TOOLS)], '{"n": 1}') for i in range(calls)
            ),
            start_ms,
        )
        for calls in (1, 2, 3, 4)
    ]


class Templates:
    """Runs encoded once per shape; a copy is a byte replacement, not an Avro encoding.

    This is what makes a million-event journal quick to write: records are real Avro that
    decode to real events, only the ids differ between copies.
    """

    def __init__(self, topics: TopicNames, codec: AvroCodec, partitions: int, start_ms: int):
        self.partitions = partitions
        self.shapes = [
            list(encode(run_messages(spec), topics, codec, partitions))
            for spec in template_specs(start_ms)
        ]

    def run(self, n: int, shape: int) -> list[Encoded]:
        token = b"%07d" % n
        key = b"b-" + token
        partition = partition_for(key, self.partitions)
        return [
            Encoded(
                e.topic,
                partition,
                key,
                e.value.replace(TOKEN, token),
                [(h, v.replace(TOKEN, token) if isinstance(v, bytes) else v) for h, v in e.headers],
            )
            for e in self.shapes[shape]
        ]


def interleave(
    runs: Iterator[list[Encoded]], in_flight: int, rng: random.Random
) -> Iterator[Encoded]:
    """Records of many runs at once: each step takes the next record of a random live run."""
    live: list[list[Encoded]] = []
    exhausted = False
    while True:
        while not exhausted and len(live) < in_flight:
            run = next(runs, None)
            if run is None:
                exhausted = True
                break
            live.append(run[::-1])
        if not live:
            return
        i = rng.randrange(len(live))
        yield live[i].pop()
        if not live[i]:
            live[i] = live[-1]
            live.pop()


def encode(
    messages: list[ev.JournalEvent | it.EffectIntent],
    topics: TopicNames,
    codec: AvroCodec,
    partitions: int,
) -> Iterator[Encoded]:
    for m in messages:
        name, datum = to_record(m)
        value = codec.encode(name, datum)
        key = m.run_id.encode()
        partition = partition_for(key, partitions)
        if isinstance(m, it.Intent):
            kind = it.KIND[type(m)]
            headers: list[tuple[str, str | bytes | None]] = [
                ("kind", kind.encode()),
                ("effect_key", m.effect_key.encode()),
            ]
            yield Encoded(topics.effects, partition, key, value, headers)
        else:
            yield Encoded(topics.events, partition, key, value, [("type", name.encode())])

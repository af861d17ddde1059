"""The exactly-once processing loop: one Kafka transaction per batch.

consume a batch from runs.inbox → decide each input against its run → in ONE transaction:
events to runs.events, snapshots to runs.state, intents to effects, dead letters to
runs.dlq, and the input offsets with the consumer's group metadata (KIP-447: a member the
group has moved on from cannot commit). Memory changes only after the commit succeeded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from runcoord import metrics, tracing
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.coordinator.outbox import Outbox, Record
from runcoord.coordinator.partitions import PartitionRuns, Staged
from runcoord.coordinator.rebuild import StateReader
from runcoord.deadletter import DeadLetter
from runcoord.domain import Decision, Phase, Policy, RunState, decide
from runcoord.domain import inputs as inp
from runcoord.domain.intents import KIND
from runcoord.errors import Fatal, KafkaFatal, KafkaRetriable, Retriable, SerializationError
from runcoord.faults import fault_point
from runcoord.kafka import (
    BoundedCalls,
    KafkaRetriableError,
    TopicNames,
    carries_record,
    consumer_config,
    producer_config,
    take_batch,
    translate,
)
from runcoord.partitioning import partition_for

log = logging.getLogger(__name__)

INPUT_TYPES = (
    inp.StartRun,
    inp.CancelRun,
    inp.RunCreated,
    inp.RunObserved,
    inp.ToolResult,
    inp.SubmissionResult,
    inp.EffectFailed,
    inp.ApprovalDecision,
)
# Where fault tests may kill or freeze a coordinator (runcoord.faults).
FAULT_POINTS = ("after_produce", "in_send_offsets", "before_commit", "after_commit", "in_revoke")


@dataclass(frozen=True)
class LoopConfig:
    bootstrap: str
    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    group_id: str = "runcoord-coordinator"
    # Stable per replica (coord-0, coord-1…): a restarted replica's init_transactions then
    # aborts its predecessor's open transaction at once instead of after its timeout.
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    batch_max: int = 500
    # How long an idle coordinator waits for an input, at most: it wakes for its next timer
    # sooner (each wake costs a poll and a look at the timers: 20 a second at 50 ms, the
    # most of an idle replica's CPU).
    batch_wait_ms: int = 500
    ticks_per_batch: int = 1000
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 60_000
    transaction_timeout_ms: int = 30_000
    # The timeout handed to librdkafka's transactional calls, and how long we wait for one
    # before taking it as hung (it can block past its own timeout; see BoundedCalls). The
    # session's clients are then rebuilt, before max.poll.interval.ms drops us from the group.
    call_timeout_s: float = 30.0
    call_deadline_s: float = 45.0
    # Join as a static member named instance_id (KIP-345): a replica killed and restarted
    # under its name takes its partitions back the moment it rejoins, instead of after the
    # dead one's session timed out and a rebalance (measured under the incident plan: tool
    # results waited ~20 s for a restarted coordinator). The cost: a replica stopped for
    # good keeps its partitions until session_timeout_ms passes, as a killed one always did.
    # Only for names unique among live replicas (a twin is fenced: FENCED_INSTANCE_ID).
    static_membership: bool = False


@dataclass
class LoopStats:
    batches: int = 0
    inputs: int = 0
    ticks: int = 0
    records_out: int = 0
    aborts: int = 0
    dead_letters: int = 0
    txn_ms: list[float] = field(default_factory=list)

    def take_txn_ms(self) -> list[float]:
        taken, self.txn_ms = self.txn_ms, []
        return taken


class Coordinator:
    _calls: BoundedCalls  # the session's producer calls (one session at a time)

    def __init__(
        self,
        config: LoopConfig,
        policy: Policy,
        codec: AvroCodec | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.policy = policy
        self.codec = codec or AvroCodec()
        self.clock = clock
        self.stats = LoopStats()
        self.owned: dict[int, PartitionRuns] = {}
        self._partitions = 0
        # The group metadata our offsets are sent with, read once per assignment: the
        # client answers it through its main thread, a round trip per transaction otherwise.
        # It is what fences a zombie (its generation), and only a rebalance changes it, and
        # every rebalance passes through _on_assign (the assignor is eager) or _drop.
        self._group: object | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; a fenced or broken client is rebuilt, not fatal."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self._session(stop)
                backoff = 0.5
            except (Fatal, Retriable) as exc:
                # Fenced (a newer owner exists), a broken client, or a broker that cannot
                # serve us yet (COORDINATOR_LOAD_IN_PROGRESS from init_transactions right
                # after a broker restart killed the replica before): drop all state, rejoin.
                log.warning("coordinator %s: %s; rejoining", self.config.instance_id, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _session(self, stop: threading.Event) -> None:
        c = self.config
        producer = Producer(
            producer_config(
                c.bootstrap,
                transactional_id=f"{c.group_id}-{c.instance_id}",
                client_id=c.instance_id,
                **{"transaction.timeout.ms": c.transaction_timeout_ms},
            )
        )
        overrides: dict[str, object] = {
            "client.id": c.instance_id,
            "session.timeout.ms": c.session_timeout_ms,
            "max.poll.interval.ms": c.max_poll_interval_ms,
        }
        if c.static_membership:
            overrides["group.instance.id"] = c.instance_id
        consumer = Consumer(consumer_config(c.bootstrap, c.group_id) | overrides)
        reader = StateReader(c.bootstrap, c.topics.state, f"{c.group_id}-rebuild", self.codec)
        self._calls = calls = BoundedCalls(f"{c.instance_id}-txn", c.call_deadline_s)
        try:
            self._partitions = self._partition_count(consumer)
            # Join the group while init_transactions waits for the broker to abort the open
            # transaction of our previous incarnation (a restart after kill -9): librdkafka
            # joins in its own thread, and assignments are served only by our poll, after.
            consumer.subscribe(
                [c.topics.inbox],
                on_assign=lambda cons, parts: self._on_assign(cons, reader, parts),
                on_revoke=lambda _c, parts: self._revoked(parts),
                on_lost=lambda _c, parts: self._drop(parts),
            )
            began = time.monotonic()
            self._call("init_transactions", lambda: producer.init_transactions(c.call_timeout_s))
            log.info(
                "coordinator %s: transactions ready in %.2f s",
                c.instance_id,
                time.monotonic() - began,
            )
            while not stop.is_set():
                self._batch(consumer, producer)
        finally:
            self.owned.clear()
            self._group = None
            calls.close()
            # Cleanup must not turn a fenced session into a dead thread: a fenced producer
            # raises its fatal error again on flush, and we are rebuilding anyway. A hung
            # producer is not touched again: its open transaction is aborted by the next
            # session's init_transactions, under the same transactional.id.
            cleanups: list[Callable[[], object]] = [reader.close, consumer.close]
            if calls.hung is None:
                cleanups.append(lambda: producer.flush(5))
            for cleanup in cleanups:
                try:
                    cleanup()  # consumer.close leaves the group now: partitions move at once
                except (KafkaException, RuntimeError) as exc:
                    log.warning("closing after session end: %s", exc)

    def _partition_count(self, consumer: Consumer) -> int:
        meta = consumer.list_topics(self.config.topics.inbox, timeout=10)
        topic = meta.topics.get(self.config.topics.inbox)
        if topic is None or topic.error is not None or not topic.partitions:
            raise Fatal(f"topic {self.config.topics.inbox} not found: run `runcoord topics apply`")
        return len(topic.partitions)

    def _on_assign(
        self, consumer: Consumer, reader: StateReader, partitions: list[TopicPartition]
    ) -> None:
        # Ask for the committed offsets first: with read_committed they are fetched with
        # require_stable, which waits until the previous owner's transaction is resolved.
        # Only then does runs.state hold everything those offsets stand for.
        began = time.monotonic()
        consumer.committed(partitions, timeout=60)
        settled = time.monotonic()
        states = reader.read([tp.partition for tp in partitions])
        self._group = consumer.consumer_group_metadata()
        for tp in partitions:
            runs = PartitionRuns(tp.partition)
            runs.load(states[tp.partition].values(), self.policy)
            self.owned[tp.partition] = runs
            log.info("assigned %s[%d]: %d runs rebuilt", tp.topic, tp.partition, len(runs))
        log.info(
            "assigned %d partitions: offsets settled in %.2f s, state read in %.2f s",
            len(partitions),
            settled - began,
            time.monotonic() - settled,
        )

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        if partitions:
            fault_point("in_revoke")  # a replica dying while it hands partitions over
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        self._group = None
        for tp in partitions:
            self.owned.pop(tp.partition, None)
            log.info("revoked %s[%d]", tp.topic, tp.partition)

    # -- one batch ------------------------------------------------------------------------

    def _batch(self, consumer: Consumer, producer: Producer) -> None:
        c = self.config
        messages = take_batch(consumer, c.batch_max, self.wait_s())
        inputs = [m for m in messages if self._usable(m)]
        now = int(self.clock() * 1000)
        ticks = [
            (p, run_id)
            for p, runs in list(self.owned.items())
            for run_id in runs.due(now, self.policy, c.ticks_per_batch)
        ]
        if not inputs and not ticks:
            return
        started = time.perf_counter()
        self._call("begin_transaction", producer.begin_transaction)
        staged = Staged(self.owned)
        outbox = Outbox(self.codec, c.topics)
        # Read once per batch: with tracing off, no span and no header is made per input.
        traced = tracing.ENABLED
        try:
            for msg in inputs:
                if traced:
                    with self._span(outbox, "coordinator apply", msg):
                        self._handle(msg, staged, outbox, now)
                else:
                    self._handle(msg, staged, outbox, now)
            for p, run_id in ticks:
                if traced:
                    with self._span(outbox, "coordinator tick", None, run_id):
                        self._decide(p, inp.Tick(run_id), staged, outbox, now, None)
                else:
                    self._decide(p, inp.Tick(run_id), staged, outbox, now, None)
            for p, state in staged:
                outbox.snapshot(p, state)
            outbox.flush_into(lambda r: self._produce(producer, r))
            fault_point("after_produce")
            offsets = _next_offsets(inputs)
            if offsets:
                group = self._group or consumer.consumer_group_metadata()

                def send_offsets() -> None:
                    fault_point("in_send_offsets")  # where librdkafka has been seen to hang
                    producer.send_offsets_to_transaction(offsets, group, c.call_timeout_s)

                self._call("send_offsets_to_transaction", send_offsets)
            fault_point("before_commit")
            self._commit(producer)
            fault_point("after_commit")
        except KafkaRetriable as exc:
            self._abort(producer, consumer, inputs, ticks, exc)
            return
        staged.apply(self.policy)
        self._observe(outbox, inputs, time.perf_counter() - started)
        s = self.stats
        s.batches += 1
        s.inputs += len(inputs)
        s.ticks += len(ticks)
        s.records_out += len(outbox.records)
        s.dead_letters += outbox.counts.get("dead_letters", 0)
        s.txn_ms.append((time.perf_counter() - started) * 1000)

    def wait_s(self) -> float:
        """How long to wait for an input: until the next timer of an owned run is due, and
        ``batch_wait_ms`` at most."""
        wait_ms = self.config.batch_wait_ms
        timers = [t for runs in self.owned.values() if (t := runs.next_timer_ms()) is not None]
        if timers:
            wait_ms = min(wait_ms, max(0, min(timers) - int(self.clock() * 1000)))
        return wait_ms / 1000

    @contextmanager
    def _span(
        self, outbox: Outbox, name: str, msg: Message | None, run_id: str | None = None
    ) -> Iterator[None]:
        """One input (or timer) in a span, the child of the trace context in the input's
        headers (a new trace without one, and for timers); everything the input causes is
        written with this span's context."""
        attributes: dict[str, Any] = {"run_id": run_id}
        if msg is not None:
            attributes["messaging.destination.name"] = msg.topic()
            attributes["messaging.kafka.partition"] = msg.partition()
            attributes["messaging.kafka.offset"] = msg.offset()
        with tracing.consume(name, msg, attributes):
            outbox.trace = tracing.inject([])
            try:
                yield
            finally:
                outbox.trace = []

    def _observe(self, outbox: Outbox, inputs: list[Message], seconds: float) -> None:
        metrics.TXN_SECONDS.observe(seconds)
        for name, n in outbox.event_types.items():
            metrics.EVENTS.labels(name).inc(n)
        for kind, n in outbox.intent_kinds.items():
            metrics.INTENTS.labels(kind).inc(n)
        for kind, n in outbox.dead_letter_kinds.items():
            metrics.DEAD_LETTERS.labels("coordinator", kind).inc(n)
        if outbox.deadline_outputs:
            metrics.DEADLINES.inc(outbox.deadline_outputs)
        metrics.INPUTS.labels("inbox").inc(len(inputs))

    def update_run_gauges(self) -> None:
        """Partitions owned, and runs by phase; called from the stats thread, so it reads
        copies and may skip."""
        metrics.PARTITIONS.set(len(self.owned))
        phases: Counter[str] = Counter()
        try:
            for runs in list(self.owned.values()):
                phases.update(runs.phases)
        except RuntimeError:  # a run's first phase of its kind came in under us: next time
            return
        for phase in Phase:
            metrics.RUNS.labels(phase.value).set(phases.get(phase.value, 0))

    def _usable(self, msg: Message) -> bool:
        return carries_record(msg, log, "coordinator") and msg.partition() in self.owned

    def _handle(self, msg: Message, staged: Staged, outbox: Outbox, now: int) -> None:
        p = msg.partition()
        key = msg.key()
        value = msg.value()
        try:
            if value is None:
                raise SerializationError("empty message (no value)")
            name, datum = self.codec.decode(value)
            message = from_record(name, datum)
        except SerializationError as exc:
            self._dead_letter(outbox, msg, "decode", str(exc), None, now)
            return
        if not isinstance(message, INPUT_TYPES):
            self._dead_letter(outbox, msg, "decode", f"{name} is not an input", name, now)
            return
        run_id = message.run_id
        if key is None or key != run_id.encode():
            self._dead_letter(outbox, msg, "routing", "key does not match run_id", name, now)
        elif partition_for(run_id, self._partitions) != p:
            # Produced with another partitioner: its owner is someone else. Applying it here
            # would fork the run's state between two coordinators.
            reason = (
                f"misrouted: run {run_id} belongs on partition "
                f"{partition_for(run_id, self._partitions)}, not {p}"
            )
            self._dead_letter(outbox, msg, "routing", reason, name, now)
        else:
            self._decide(p, message, staged, outbox, now, msg)

    def _decide(
        self,
        p: int,
        message: inp.Input,
        staged: Staged,
        outbox: Outbox,
        now: int,
        msg: Message | None,
    ) -> None:
        """Decide one input (or timer) and stage what it changes, or dead-letter it.

        Whatever goes wrong with this one input stays with it: it is dead-lettered with the
        reason, nothing of its decision is written or staged (the run stays as it was before
        it), and the batch goes on. An exception escaping here would instead kill the session
        and meet the same record again after the rebuild, stopping its partition for good.
        """
        name = type(message).__name__
        try:
            current = staged.get(p, message.run_id)
            decision = decide(current, message, now_ms=now, policy=self.policy)
            # Encodes and size-checks everything before adding any of it (raises first).
            outbox.decision(p, decision)
        except (KafkaRetriable, KafkaFatal):
            raise  # the broker's trouble, not this input's: the batch's own handling
        except SerializationError as exc:
            # The decision cannot be written: a record over Kafka's limit, a value the codec
            # refuses.
            log.warning("run %s: cannot write the decision on %s: %s", message.run_id, name, exc)
            self._refuse(outbox, p, message, msg, "internal", f"{type(exc).__name__}: {exc}", now)
            return
        except Exception as exc:
            # A bug while deciding (decide() itself refuses every bad input with a reason).
            log.exception("run %s: deciding %s raised", message.run_id, name)
            self._refuse(outbox, p, message, msg, "decide_error", _describe(exc), now)
            return
        if decision.state is not None:
            staged.set(p, decision.state)
        if decision.dead_letter is not None and msg is not None:
            self._dead_letter(outbox, msg, "rejected", decision.dead_letter, name, now)
        if tracing.ENABLED:
            try:
                _annotate(message, decision, current)
            except Exception:  # a span's attributes are never worth an input
                log.exception("run %s: annotating the span of %s", message.run_id, name)

    def _refuse(
        self,
        outbox: Outbox,
        p: int,
        message: inp.Input,
        msg: Message | None,
        kind: str,
        reason: str,
        now: int,
    ) -> None:
        """Dead-letter an input that could not be applied; a timer has no record, so its
        letter names the run and the partition instead (it is not dropped unseen)."""
        name = type(message).__name__
        if msg is not None:
            self._dead_letter(outbox, msg, kind, reason, name, now)
            return
        outbox.dead_letter(
            DeadLetter(
                source_topic="",
                partition=p,
                offset=-1,
                key=message.run_id,
                kind=kind,
                reason=reason,
                record_name=name,
                payload=b"",
                consumer=self.config.instance_id,
                at_ms=now,
            )
        )

    def _dead_letter(
        self, outbox: Outbox, msg: Message, kind: str, reason: str, name: str | None, now: int
    ) -> None:
        outbox.dead_letter(
            DeadLetter.of(
                msg,
                kind=kind,
                reason=reason,
                record_name=name,
                consumer=self.config.instance_id,
                at_ms=now,
            )
        )

    # -- Kafka plumbing -------------------------------------------------------------------

    def _produce(self, producer: Producer, r: Record) -> None:
        while True:
            try:
                if r.partition is None:
                    producer.produce(r.topic, r.value, r.key, headers=r.headers)
                else:
                    producer.produce(
                        r.topic, r.value, r.key, partition=r.partition, headers=r.headers
                    )
                return
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                raise translate(exc) from exc

    def _commit(self, producer: Producer) -> None:
        timeout = self.config.call_timeout_s
        for _ in range(3):
            try:
                self._calls.run("commit_transaction", lambda: producer.commit_transaction(timeout))
                return
            except KafkaException as exc:
                err = translate(exc)
                # A retriable commit error that does not require an abort: commit again.
                if isinstance(err, KafkaRetriableError) and not err.requires_abort:
                    continue
                raise err from exc
        raise KafkaRetriable("commit_transaction kept failing")

    def _abort(
        self,
        producer: Producer,
        consumer: Consumer,
        inputs: list[Message],
        ticks: list[tuple[int, str]],
        exc: Exception,
    ) -> None:
        self.stats.aborts += 1
        metrics.TXN_ABORTS.inc()
        log.warning("aborting batch of %d inputs: %s", len(inputs), exc)
        timeout = self.config.call_timeout_s
        self._call("abort_transaction", lambda: producer.abort_transaction(timeout))
        # Rewind to the first input of the batch; it will be read and decided again.
        for tp in _first_offsets(inputs):
            if tp.partition in self.owned:
                try:
                    consumer.seek(tp)
                except KafkaException as seek_exc:
                    log.warning("seek %s[%d]: %s", tp.topic, tp.partition, seek_exc)
        for p, run_id in ticks:
            runs = self.owned.get(p)
            if runs is not None:
                runs.requeue([run_id], self.policy)

    def _call(self, what: str, fn: Callable[[], object]) -> None:
        """A producer call that talks to the broker: bounded, its errors translated."""
        try:
            self._calls.run(what, fn)
        except KafkaException as exc:
            raise translate(exc) from exc


def _annotate(message: inp.Input, decision: Decision, state: RunState | None) -> None:
    """The input's span: named for the input, with its ids and what it caused (no payload)."""
    name = type(message).__name__
    state = decision.state or state
    tracing.rename(f"coordinator apply {name}")
    tracing.annotate(
        input=name,
        run_id=message.run_id,
        thread_id=state.thread_id if state is not None else None,
        tool_call_id=getattr(message, "tool_call_id", None),
        effect_key=getattr(message, "effect_key", None),
        events=len(decision.events),
        intents=",".join(KIND[type(i)] for i in decision.intents) or None,
    )


def _describe(exc: BaseException) -> str:
    """An exception as a dead letter's reason: its type, message and where it was raised."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
    return [TopicPartition(t, p, o) for (t, p), o in last.items()]


def _first_offsets(messages: list[Message]) -> list[TopicPartition]:
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        first.setdefault((m.topic() or "", m.partition() or 0), m.offset() or 0)
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]

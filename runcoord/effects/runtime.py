"""The executor runtime: at-least-once execution of effect intents, one mechanism for all.

Consume ``effects`` (read_committed, so aborted intents never run), keep the intents whose
``kind`` header this executor handles, run each on its lane's handler concurrently (a lane
per kind of executor, so one replica can host every kind: a lane that is full queues its
own intents without holding up the others'), send what it reports
back to ``runs.inbox``, and commit an intent's offset only when it and everything before it
on its partition finished and their reports were delivered. A crash therefore redelivers
unfinished intents; the effect ledger makes running one twice harmless, and the coordinator
ignores a report it already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from runcoord import metrics, tracing
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record, to_record
from runcoord.deadletter import DeadLetter
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LeaseLost
from runcoord.effects.offsets import OffsetTracker
from runcoord.errors import Retriable, SerializationError
from runcoord.kafka import (
    TopicNames,
    carries_record,
    consumer_config,
    error_for,
    producer_config,
    take_batch,
)

log = logging.getLogger(__name__)
# How long the reading and delivery threads wait when nothing comes (an intent or a report
# ends the wait at once): how often an idle replica wakes, and how soon it sees a stop.
_IDLE_WAIT_S = 0.5

Handler = Callable[[it.EffectIntent], Awaitable[Sequence[inp.Input]]]
_INTENT_TYPES = typing.get_args(it.EffectIntent)
Work = Callable[[], Coroutine[Any, Any, None]]  # one intent's run, not started yet


@dataclass(frozen=True, eq=False)  # each lane is itself (its handler need not be hashable)
class Lane:
    """The intents of these kinds, run by this handler, at most ``concurrency`` at a time."""

    kinds: frozenset[str]
    handler: Handler
    concurrency: int


@dataclass(frozen=True)
class ExecutorConfig:
    bootstrap: str
    name: str  # provider | tools | submissions | all
    kinds: frozenset[str]  # every kind its lanes run
    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    group_id: str = ""
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = 256  # of the one lane made from a lone handler
    # Intents a full lane holds for later before reading waits for it to drain (reading
    # waits for every lane then: backpressure, with the queued offsets not yet committed).
    queued_max: int = 1024
    session_timeout_ms: int = 10_000
    retry_cap_s: float = 10.0
    # Join as a static member named instance_id (KIP-345): a replica restarted under its name
    # gets its partitions back at once instead of after the dead one's session timed out and
    # a rebalance. Only for names unique among live replicas (a twin is fenced).
    static_membership: bool = False
    # Finished intents' offsets are committed at most this often (and on revoke and stop).
    # A commit per batch was a broker round trip per intent in each of the three executors
    # (every executor reads every intent); what a crash redelivers since the last commit is
    # answered from the ledger, or is a watch, which changes nothing.
    commit_interval_s: float = 0.25

    @property
    def group(self) -> str:
        return self.group_id or f"runcoord-executor-{self.name}"


@dataclass
class ExecutorStats:
    started: int = 0
    finished: int = 0
    retries: int = 0
    failures: int = 0
    dead_letters: int = 0
    skipped: int = 0  # stale watches not run (runcoord.domain.intents.stale)


class Executor:
    def __init__(
        self,
        config: ExecutorConfig,
        handler: Handler | Sequence[Lane],
        codec: AvroCodec | None = None,
    ) -> None:
        self.config = config
        lanes = [Lane(config.kinds, handler, config.concurrency)] if callable(handler) else handler
        self.tracker = OffsetTracker()
        self.lanes = Lanes(lanes, self.tracker.current, config.queued_max)
        if self.lanes.kinds != config.kinds:
            raise ValueError(
                f"the lanes run {sorted(self.lanes.kinds)}, the executor {sorted(config.kinds)}"
            )
        self.codec = codec or AvroCodec()
        self.stats = ExecutorStats()

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self.run_async(stop))

    async def run_async(self, stop: threading.Event) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        consumer_overrides: dict[str, object] = {
            "client.id": c.instance_id,
            "session.timeout.ms": c.session_timeout_ms,
        }
        if c.static_membership:
            consumer_overrides["group.instance.id"] = c.instance_id
        consumer = Consumer(consumer_config(c.bootstrap, c.group) | consumer_overrides)
        # No linger: every report is waited for (its intent's offset is committed only once
        # the broker has it), and it is the next hop of a step, so lingering would only add
        # its time to every step. Under load, reports still batch while requests are out.
        no_linger: dict[str, Any] = {"linger.ms": 0}
        producer = Producer(producer_config(c.bootstrap, client_id=c.instance_id, **no_linger))
        # librdkafka clients are used from one thread each: the consumer from this pool's
        # single worker, the producer's callbacks from the poller thread below.
        kafka_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{c.name}-consumer")
        polling = threading.Event()
        poller = threading.Thread(target=_poll_forever, args=(producer, polling), daemon=True)
        poller.start()
        consumer.subscribe(
            [c.topics.effects],
            on_revoke=lambda cons, parts: self._revoked(cons, parts),
            on_lost=lambda _c, parts: self.tracker.forget([tp.partition for tp in parts]),
        )
        lanes, tasks = self.lanes, self.lanes.tasks
        committed_at = 0.0
        try:
            while not stop.is_set():
                messages = await loop.run_in_executor(
                    kafka_thread, take_batch, consumer, 200, _IDLE_WAIT_S
                )
                for msg in messages:
                    if not carries_record(msg, log, self.config.name):
                        continue
                    p, o = msg.partition() or 0, msg.offset() or 0
                    gen = self.tracker.started(p, o)
                    try:
                        kind = _kind(msg)
                    except UnicodeDecodeError:
                        if self._undecodable_kind_is_ours(msg):
                            lanes.start(partial(self._refuse_kind, msg, producer, p, o, gen, stop))
                        else:
                            self.tracker.finished(p, o, gen)
                        continue
                    lane = lanes.of(kind)
                    if lane is None:
                        self.tracker.finished(p, o, gen)
                        continue
                    work = partial(self._one, msg, producer, p, o, gen, stop, lane.handler)
                    if not lanes.offer(lane, p, gen, work):
                        await lanes.room(lane, stop)
                if time.monotonic() - committed_at >= c.commit_interval_s:
                    committed_at = time.monotonic()
                    await self._commit(loop, kafka_thread, consumer)
            # Let in-flight work finish briefly; whatever does not is redelivered.
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            await self._commit(loop, kafka_thread, consumer)
        finally:
            for task in tasks:
                task.cancel()
            await loop.run_in_executor(kafka_thread, consumer.close)
            kafka_thread.shutdown()
            polling.set()
            poller.join(5)
            producer.flush(10)

    def _revoked(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Commit what is finished before the partitions move (we are on the consumer's
        # thread here), then forget them: unfinished intents go to the new owner.
        ours = {tp.partition for tp in parts}
        offsets = [
            TopicPartition(self.config.topics.effects, p, o)
            for p, o in self.tracker.committable().items()
            if p in ours
        ]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revoke: %s", exc)
        self.tracker.forget(list(ours))

    async def _commit(
        self, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor, consumer: Consumer
    ) -> None:
        offsets = [
            TopicPartition(self.config.topics.effects, p, o)
            for p, o in self.tracker.committable().items()
        ]
        if not offsets:
            return
        try:
            await loop.run_in_executor(
                pool, lambda: consumer.commit(offsets=offsets, asynchronous=False)
            )
        except KafkaException as exc:
            # Not fatal: the offsets are committed with the next batch, or redelivered.
            log.warning("%s commit: %s", self.config.name, exc)

    def _undecodable_kind_is_ours(self, msg: Message) -> bool:
        """Whether this executor dead-letters a record whose ``kind`` header is not UTF-8.

        Every kind of executor reads every record of ``effects``; for exactly one dead letter
        per record, the one whose kinds include the intent's own (by its decoded type) does.
        When the value does not decode either, nobody can tell whose it is: each one does.
        """
        try:
            name, datum = self.codec.decode(msg.value() or b"")
            intent = from_record(name, datum)
        except SerializationError:
            return True
        return it.KIND.get(type(intent)) in self.config.kinds

    async def _refuse_kind(
        self, msg: Message, producer: Producer, p: int, o: int, gen: int, stop: threading.Event
    ) -> None:
        """Dead-letter a record whose routing header cannot be read; it is never run (what
        wrote the header is not the coordinator, so what it asks for is not trusted)."""
        raw = _header_bytes(msg, "kind") or b""
        reason = f"the kind header is not UTF-8 ({raw[:40]!r}): the intent cannot be routed"
        letter = DeadLetter.of(
            msg,
            kind="routing",
            reason=reason,
            record_name=None,
            consumer=self.config.instance_id,
            at_ms=int(time.time() * 1000),
        )
        await self._deliver(producer, [letter], stop)
        self.stats.dead_letters += 1
        metrics.DEAD_LETTERS.labels(self.config.name, "routing").inc()
        self.tracker.finished(p, o, gen)

    async def _one(
        self,
        msg: Message,
        producer: Producer,
        p: int,
        o: int,
        gen: int,
        stop: threading.Event,
        handler: Handler,
    ) -> None:
        # With tracing on, the intent's span: the child of the coordinator's span that
        # emitted it; the reports produced inside carry it, so the coordinator's next span
        # continues the trace.
        with self._span(msg, p, o) if tracing.ENABLED else contextlib.nullcontext():
            self.stats.started += 1
            began = time.perf_counter()
            try:
                name, datum = self.codec.decode(msg.value() or b"")
                intent = from_record(name, datum)
                if not isinstance(intent, _INTENT_TYPES):
                    raise SerializationError(f"{name} is not an intent")
            except SerializationError as exc:
                await self._deliver(producer, [self._dead_letter(msg, str(exc))], stop)
                self.stats.dead_letters += 1
                metrics.DEAD_LETTERS.labels(self.config.name, "decode").inc()
                self.tracker.finished(p, o, gen)
                return
            if it.stale(intent, _issued_at_ms(msg), int(time.time() * 1000)):
                # The coordinator has given up on this watch and renews it by its own timer.
                self.tracker.finished(p, o, gen)
                self.stats.skipped += 1
                metrics.EFFECTS.labels(it.KIND[type(intent)], "stale").inc()
                return
            if tracing.ENABLED:
                tracing.annotate(**it.log_ids(intent), tool=getattr(intent, "tool", None))
            reports = await self._execute(intent, stop, handler)
            if reports is None:  # stopping: leave it unfinished, it is redelivered
                return
            if tracing.ENABLED:
                tracing.annotate(outcome=",".join(_outcome(r) for r in reports))
            await self._deliver(producer, reports, stop)
            self.tracker.finished(p, o, gen)
            self.stats.finished += 1
            kind = it.KIND[type(intent)]
            metrics.EFFECT_SECONDS.labels(kind).observe(time.perf_counter() - began)
            for report in reports:
                metrics.EFFECTS.labels(kind, _outcome(report)).inc()

    def _span(self, msg: Message, p: int, o: int) -> contextlib.AbstractContextManager[object]:
        kind = _header(msg, "kind")
        attributes = {
            "kind": kind,
            "effect_key": _header(msg, "effect_key"),
            "messaging.destination.name": msg.topic(),
            "messaging.kafka.partition": p,
            "messaging.kafka.offset": o,
        }
        return tracing.consume(f"{self.config.name} {kind}", msg, attributes)

    async def _execute(
        self, intent: it.EffectIntent, stop: threading.Event, handler: Handler
    ) -> Sequence[Any] | None:
        backoff = 0.2
        while not stop.is_set():
            try:
                return await handler(intent)
            except Retriable as exc:
                self.stats.retries += 1
                metrics.EFFECT_RETRIES.labels(it.KIND[type(intent)]).inc()
                log.info(
                    "%s %s: %s; retrying in %.1fs",
                    intent.run_id,
                    type(intent).__name__,
                    exc,
                    backoff,
                    extra=it.log_ids(intent),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_cap_s)
            except LeaseLost as exc:
                # Another executor took this effect over (our lease lapsed: a pause, a lost
                # heartbeat) and holds its own delivery of this intent: its outcome is the one
                # of record and it reports it. Reporting ours too would be a second answer.
                log.info(
                    "%s %s: %s; the new holder reports it",
                    intent.run_id,
                    type(intent).__name__,
                    exc,
                    extra=it.log_ids(intent),
                )
                return []
            except Exception as exc:
                # A bug or a permanent failure nobody classified: the run must not wait on
                # it forever, so it is told, with the reason.
                self.stats.failures += 1
                log.exception(
                    "%s %s failed", intent.run_id, type(intent).__name__, extra=it.log_ids(intent)
                )
                kind = it.KIND[type(intent)]
                return [
                    inp.EffectFailed(
                        intent.run_id, intent.effect_key, kind, f"{type(exc).__name__}: {exc}"
                    )
                ]
        return None

    async def _deliver(
        self, producer: Producer, reports: Sequence[Any], stop: threading.Event
    ) -> None:
        """Produce every report and wait until the broker has each one."""
        loop = asyncio.get_running_loop()
        for report in reports:
            if isinstance(report, DeadLetter):
                topic, key = self.config.topics.dlq, (report.key or "").encode()
            else:
                topic, key = self.config.topics.inbox, report.run_id.encode()
            name, datum = to_record(report)
            value = self.codec.encode(name, datum)
            # The current span's context (the intent's), when tracing is on.
            headers = tracing.inject([]) if tracing.ENABLED else None
            backoff = 0.2
            while True:
                done: asyncio.Future[None] = loop.create_future()

                def delivered(
                    err: KafkaError | None, _msg: Message, fut: asyncio.Future[None] = done
                ) -> None:
                    outcome = None if err is None else error_for(err)
                    loop.call_soon_threadsafe(_settle, fut, outcome)

                try:
                    producer.produce(topic, value, key, on_delivery=delivered, headers=headers)
                except BufferError:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    await done
                    break
                except Exception as exc:
                    if stop.is_set():
                        raise
                    log.warning("delivering %s: %s; again in %.1fs", name, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.config.retry_cap_s)

    def _dead_letter(self, msg: Message, reason: str) -> DeadLetter:
        return DeadLetter.of(
            msg,
            kind="decode",
            reason=reason,
            record_name=None,
            consumer=self.config.instance_id,
            at_ms=int(time.time() * 1000),
        )


class Lanes:
    """Which lane runs an intent, and when: one with room starts it at once, a full one
    queues it (reading waits only once a lane holds ``queued_max``), and each run that ends
    starts the next one queued in its lane. Queued work of a partition revoked meanwhile
    (``current(partition, generation)`` false) is dropped: it is the new owner's to run."""

    def __init__(
        self, lanes: Sequence[Lane], current: Callable[[int, int], bool], queued_max: int
    ) -> None:
        self._slots = {lane: _Slots(lane.concurrency) for lane in lanes}
        self._by_kind = {kind: lane for lane in lanes for kind in lane.kinds}
        self.kinds = frozenset(self._by_kind)
        self._current = current
        self._queued_max = queued_max
        self._room = asyncio.Event()  # set whenever a lane starts a queued run
        self.tasks: set[asyncio.Task[None]] = set()

    def of(self, kind: str | None) -> Lane | None:
        return self._by_kind.get(kind or "")

    def offer(self, lane: Lane, partition: int, generation: int, work: Work) -> bool:
        """Start ``work`` now if its lane has room (True), else queue it (False)."""
        slots = self._slots[lane]
        if slots.free:
            slots.free -= 1
            self.start(work, slots)
            return True
        slots.queued.append((partition, generation, work))
        return False

    def queued(self, lane: Lane) -> int:
        return len(self._slots[lane].queued)

    async def room(self, lane: Lane, stop: threading.Event) -> None:
        """Wait while the lane's queue is full (backpressure: reading waits)."""
        while self.queued(lane) >= self._queued_max and not stop.is_set():
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 0.5)

    def start(self, work: Work, slots: _Slots | None = None) -> None:
        """Run ``work`` as a task (outside every lane's bound when ``slots`` is None)."""
        task = asyncio.create_task(work())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if slots is not None:
            task.add_done_callback(lambda _t: self._finished(slots))

    def _finished(self, slots: _Slots) -> None:
        while slots.queued:
            partition, generation, work = slots.queued.popleft()
            self._room.set()
            if self._current(partition, generation):
                self.start(work, slots)
                return
        slots.free += 1


class _Slots:
    """A lane's room: how many more may start, and what waits for a place."""

    def __init__(self, concurrency: int) -> None:
        self.free = concurrency
        self.queued: deque[tuple[int, int, Work]] = deque()  # partition, generation, work


def _outcome(report: Any) -> str:
    if isinstance(report, inp.ToolResult):
        return "error_output" if report.is_error else "ok"
    if isinstance(report, inp.SubmissionResult):
        return report.outcome
    return type(report).__name__


def _settle(fut: asyncio.Future[None], error: Exception | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


def _issued_at_ms(msg: Message) -> int | None:
    """When the coordinator produced the record (its CreateTime), if the record says."""
    kind, ts = msg.timestamp()
    return ts if kind == TIMESTAMP_CREATE_TIME else None


def _header_bytes(msg: Message, name: str) -> bytes | None:
    headers: Any = msg.headers() or []
    for key, value in headers:
        if key == name and value is not None:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def _header(msg: Message, name: str) -> str | None:
    """A header's text, for logs and span attributes: bytes that are not UTF-8 read as
    replacement characters rather than raise (see :func:`_kind` for the header that routes)."""
    raw = _header_bytes(msg, name)
    return None if raw is None else raw.decode(errors="replace")


def _kind(msg: Message) -> str | None:
    """The ``kind`` header, which routes the record; raises UnicodeDecodeError when its
    bytes are not UTF-8 (such a record is dead-lettered, not guessed at)."""
    raw = _header_bytes(msg, "kind")
    return None if raw is None else raw.decode()


def _poll_forever(producer: Producer, stop: threading.Event) -> None:
    while not stop.is_set():
        producer.poll(_IDLE_WAIT_S)  # returns as soon as a delivery report is ready

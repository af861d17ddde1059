"""The projector: a read_committed consumer of the journal, the effects and the dead letters
that keeps the run projection in PostgreSQL.

At-least-once, made idempotent by the store: a batch is written in one PostgreSQL
transaction, and only after it committed are the batch's offsets committed to Kafka. A crash
between the two redelivers the batch, which the upserts absorb. A record that cannot be
decoded is logged and skipped (G5: it never stops the projector); the journal stays the
record of truth and the projection can be rebuilt from it with a new group.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from runcoord import metrics
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.deadletter import DeadLetter
from runcoord.domain import events as ev
from runcoord.errors import Retriable, SerializationError
from runcoord.forensics import store
from runcoord.forensics.projection import (
    ApprovalRow,
    DecisionRow,
    EventRow,
    RunRow,
    StepRow,
    approval_row,
    event_row,
    fold,
    step_row,
)
from runcoord.kafka import TopicNames, consumer_config, error_for, take_batch

log = logging.getLogger(__name__)

_JOURNAL_TYPES = ev.JournalEvent.__args__


@dataclass(frozen=True)
class ProjectorConfig:
    bootstrap: str
    dsn: str
    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    group_id: str = "runcoord-forensics-projector"
    batch_max: int = 5000
    batch_wait_s: float = 0.2
    retry_cap_s: float = 10.0


@dataclass
class ProjectorStats:
    batches: int = 0
    events: int = 0
    intents: int = 0
    dead_letters: int = 0
    skipped: int = 0
    retries: int = 0


@dataclass
class _Batch:
    events: list[tuple[ev.JournalEvent, int, int]] = field(default_factory=list)
    intents: list[store.IntentRow] = field(default_factory=list)
    letters: list[store.LetterRow] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class Projector:
    def __init__(self, config: ProjectorConfig, codec: AvroCodec | None = None) -> None:
        self.config = config
        self.codec = codec or AvroCodec()
        self.stats = ProjectorStats()
        self.journal = config.topics.events
        self.failure: BaseException | None = None

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        try:
            self._run(stop)
        except BaseException as exc:
            self.failure = exc
            raise

    def _run(self, stop: threading.Event) -> None:
        c = self.config
        consumer = Consumer(consumer_config(c.bootstrap, c.group_id))
        consumer.subscribe([c.topics.events, c.topics.effects, c.topics.dlq])
        conn: store.Conn | None = None
        pause = 0.1
        pending: list[Message] = []
        try:
            while not stop.is_set():
                if not pending:
                    pending = take_batch(consumer, c.batch_max, c.batch_wait_s)
                if not pending:
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(c.dsn, connect_timeout=10)
                    batch = self.decode(pending)
                    if batch.events or batch.intents or batch.letters:
                        self.apply(conn, batch)
                except (psycopg.OperationalError, Retriable) as exc:
                    # Keep the batch and try it again: its offsets were not committed.
                    self.stats.retries += 1
                    log.warning("projector: %s; retrying in %.1f s", exc, pause)
                    if conn is not None:
                        conn.close()
                    conn = None
                    stop.wait(pause)
                    pause = min(pause * 2, c.retry_cap_s)
                    continue
                pause = 0.1
                pending = []
                self._commit(consumer, batch.offsets)
        finally:
            consumer.close()
            if conn is not None:
                conn.close()

    def _commit(self, consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        parts = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]
        try:
            consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition: its new owner re-applies the batch,
            # which the upserts absorb. Nothing is lost either way.
            log.warning("projector: offset commit failed (%s); the batch will be re-applied", exc)

    # ------------------------------------------------------------------ one batch
    def decode(self, messages: list[Message]) -> _Batch:
        t = self.config.topics
        batch = _Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                # Only a fatal client error stops us; a per-partition one (a topic not created
                # yet, an EOF, a transient broker error) is a report, not a reason to stop.
                if err.fatal():
                    raise error_for(err)
                log.warning("projector: %s", error_for(err))
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            batch.offsets[(topic, partition)] = offset
            try:
                if topic == t.events:
                    batch.events.append((self._event(msg), partition, offset))
                elif topic == t.effects:
                    batch.intents.append(_intent(msg, partition, offset))
                elif topic == t.dlq:
                    batch.letters.append(self._letter(msg, partition, offset))
            except SerializationError as exc:
                self.stats.skipped += 1
                metrics.PROJECTED.labels("skipped").inc()
                log.error("projector: skipping %s[%d]@%d: %s", topic, partition, offset, exc)
        return batch

    def _event(self, msg: Message) -> ev.JournalEvent:
        name, datum = self.codec.decode(msg.value() or b"")
        event = from_record(name, datum)
        if not isinstance(event, _JOURNAL_TYPES):
            raise SerializationError(f"{name} is not a journal event")
        return event  # type: ignore[no-any-return]

    def _letter(self, msg: Message, partition: int, offset: int) -> store.LetterRow:
        name, datum = self.codec.decode(msg.value() or b"")
        letter = from_record(name, datum)
        if not isinstance(letter, DeadLetter):
            raise SerializationError(f"{name} is not a dead letter")
        return store.LetterRow(
            partition,
            offset,
            letter.key or None,
            letter.kind,
            letter.reason,
            letter.source_topic,
            letter.record_name,
            letter.at_ms,
        )

    def apply(self, conn: store.Conn, batch: _Batch) -> None:
        """Fold the batch's events into their runs and write everything in one transaction."""
        by_run: dict[str, list[tuple[ev.JournalEvent, int, int]]] = defaultdict(list)
        for item in batch.events:
            by_run[item[0].run_id].append(item)
        with conn.transaction():
            before = store.load_runs(conn, self.journal, list(by_run))
            runs: list[RunRow] = []
            new_runs: list[RunRow] = []
            rows: list[EventRow] = []
            steps: list[StepRow] = []
            approvals: list[ApprovalRow] = []
            decisions: list[DecisionRow] = []
            for run_id, items in by_run.items():
                row = before.get(run_id)
                ordered = sorted(items, key=lambda i: i[0].seq)
                for event, partition, offset in ordered:
                    rows.append(event_row(event, partition, offset))
                    step = step_row(event)
                    if step is not None:
                        steps.append(step)
                    row = fold(row, event, partition, offset)
                if row is None:
                    log.warning("projector: run %s has no RunAccepted in the journal", run_id)
                    continue
                for event, _, _ in ordered:
                    # After the fold: the run's row names the tenant its approvals are read by.
                    fact = approval_row(event, row.tenant)
                    if isinstance(fact, ApprovalRow):
                        approvals.append(fact)
                    elif isinstance(fact, DecisionRow):
                        decisions.append(fact)
                if row != before.get(run_id):
                    runs.append(row)
                if run_id not in before:
                    new_runs.append(row)
            store.write_batch(
                conn,
                self.journal,
                runs=runs,
                new_runs=new_runs,
                events=rows,
                steps=steps,
                intents=batch.intents,
                letters=batch.letters,
                approvals=approvals,
                decisions=decisions,
            )
        self.stats.batches += 1
        self.stats.events += len(batch.events)
        self.stats.intents += len(batch.intents)
        self.stats.dead_letters += len(batch.letters)
        metrics.PROJECTED.labels("event").inc(len(batch.events))
        metrics.PROJECTED.labels("intent").inc(len(batch.intents))
        metrics.PROJECTED.labels("dead_letter").inc(len(batch.letters))


def _header(msg: Message, name: str) -> str | None:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == name and value is not None:
            return _text(value, f"the {name} header") if isinstance(value, bytes) else str(value)
    return None


def _text(raw: bytes, what: str) -> str:
    """UTF-8 bytes as text; other bytes make the record one to skip, with the reason."""
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise SerializationError(f"{what} is not UTF-8 ({raw[:40]!r})") from exc


def _intent(msg: Message, partition: int, offset: int) -> store.IntentRow:
    # The headers and key say all the index needs: no decoding on this path.
    kind, effect_key = _header(msg, "kind"), _header(msg, "effect_key")
    key = msg.key()
    if kind is None or effect_key is None or not key:
        raise SerializationError("effect intent without kind/effect_key headers or key")
    _, stamp = msg.timestamp()
    return store.IntentRow(partition, offset, _text(key, "the key"), effect_key, kind, stamp)


@contextmanager
def projecting(config: ProjectorConfig) -> Iterator[Projector]:
    """A projector running in a background thread, stopped on exit (tests, the bench)."""
    projector = Projector(config)
    stop = threading.Event()
    worker = threading.Thread(target=projector.run, args=(stop,), name="projector", daemon=True)
    worker.start()
    try:
        yield projector
    finally:
        stop.set()
        worker.join(30)

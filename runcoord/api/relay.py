"""The outbox relay: publish api_outbox rows to Kafka, mark them sent only once delivered.

Rows are taken with ``FOR UPDATE SKIP LOCKED`` so several relays share the work without
sending a row twice at once; a row is marked sent in the same transaction, after the
idempotent producer's delivery report said the broker has it. A crash after delivery and
before the commit sends the row again: the record is keyed by run_id and the coordinator
ignores a StartRun for a run that exists, so the turn still becomes one run.

A row Kafka will never take (over the size limit, or an invalid record: PERMANENT) is parked
instead of being retried for ever, which stopped the relay for every tenant: it is sent to
runs.dlq as a DeadLetter with the reason and marked ``failed_at``/``failure``, and the relay
goes on with the next rows. The broker refuses a whole batch for one record in it, so a row
is parked only when it is refused on its own (resent alone). Every other failure keeps the
row for the next round, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import SpanKind

from runcoord import metrics, tracing
from runcoord.api.turns import CHANNEL
from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.deadletter import DeadLetter
from runcoord.kafka import producer_config

log = logging.getLogger(__name__)

_TAKE = """
SELECT id, topic, record_key, record_name, payload, traceparent FROM api_outbox
WHERE sent_at IS NULL AND failed_at IS NULL AND topic = ANY(%s)
ORDER BY id LIMIT %s
FOR UPDATE SKIP LOCKED
"""

# Refusals that are about the record itself: sending it again can never succeed.
PERMANENT = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)
# A dead letter keeps at most this much of the row's payload (the whole row stays in
# api_outbox), so the letter of a record too large for Kafka fits in one itself.
LETTER_PAYLOAD_BYTES = 256 * 1024
CLIENT_ID = "runcoord-api-relay"


@dataclass(frozen=True)
class RelayConfig:
    bootstrap: str
    dsn: str
    topics: Sequence[str]  # only these topics' rows: each topic set has its own relay
    batch_max: int = 500
    delivery_timeout_s: float = 30.0
    idle_wait_s: float = 1.0  # longest wait for a NOTIFY before looking again anyway
    # Where parked rows are dead-lettered; None: the runs.dlq beside the first topic (same
    # prefix, see runcoord.kafka.TopicNames).
    dlq: str | None = None

    @property
    def dlq_topic(self) -> str:
        if self.dlq is not None:
            return self.dlq
        first = self.topics[0]
        if not first.endswith("runs.inbox"):
            raise ValueError(f"no dead-letter topic given and none beside {first!r}")
        return first.removesuffix("runs.inbox") + "runs.dlq"


@dataclass
class RelayStats:
    sent: int = 0
    failed: int = 0
    parked: int = 0
    rounds: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    id: int
    topic: str
    key: bytes
    record_name: str
    payload: bytes
    traceparent: str | None


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.dlq = config.dlq_topic
        self.stats = RelayStats()
        self.taken = 0  # rows the last round took (sent, parked, or kept for the next)
        self.codec = AvroCodec()
        self.producer = self._producer()

    def _producer(self) -> Producer:
        overrides: dict[str, Any] = {
            "delivery.timeout.ms": int(self.config.delivery_timeout_s * 1000)
        }
        return Producer(producer_config(self.config.bootstrap, client_id=CLIENT_ID, **overrides))

    def relay_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int:
        """Send one batch; return how many rows were marked sent (parked ones are not)."""
        c = self.config
        with conn.transaction():
            rows = [
                _Row(int(i), t, bytes(k), n, bytes(p), tp)
                for i, t, k, n, p, tp in conn.execute(_TAKE, (list(c.topics), c.batch_max))
            ]
            self.taken = len(rows)
            if not rows:
                return 0
            outcomes = self._send(rows)
            refused = [r for r in rows if outcomes.get(r.id) is not None]
            if len(rows) > 1:
                # Refused with the rest of its batch, maybe for another record: alone now.
                for row in refused:
                    outcomes.pop(row.id)
                    outcomes.update(self._send([row]))
            delivered = [r.id for r in rows if r.id in outcomes and outcomes[r.id] is None]
            parked = self._park(
                [(r, str(outcomes[r.id])) for r in rows if outcomes.get(r.id) is not None]
            )
            if delivered:
                conn.execute(
                    "UPDATE api_outbox SET sent_at = now() WHERE id = ANY(%s)", (delivered,)
                )
            for row_id, reason in parked:
                conn.execute(
                    "UPDATE api_outbox SET failed_at = now(), failure = %s WHERE id = %s",
                    (reason, row_id),
                )
        self.stats.sent += len(delivered)
        self.stats.parked += len(parked)
        self.stats.rounds += 1
        metrics.RELAYED.labels("sent").inc(len(delivered))
        if parked:
            metrics.RELAYED.labels("parked").inc(len(parked))
        return len(delivered)

    def _send(self, rows: Sequence[_Row]) -> dict[int, str | None]:
        """Produce the rows and wait for their reports: row id -> None (delivered) or the
        reason Kafka refuses it for good. A row missing from the answer is kept for later."""
        outcomes: dict[int, str | None] = {}
        fatal: list[str] = []

        def report(row_id: int) -> Any:
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is None:
                    outcomes[row_id] = None
                    return
                self._failed(row_id, err)
                if err.code() in PERMANENT:
                    outcomes[row_id] = _reason(err)
                elif err.fatal():
                    fatal.append(_reason(err))

            return on_delivery

        for row in rows:
            try:
                with _hop(row.key, row.id, row.traceparent) as headers:
                    self.producer.produce(
                        row.topic, row.payload, row.key, on_delivery=report(row.id), headers=headers
                    )
            except BufferError:
                break  # the producer's queue is full: the rest waits for the next round
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is None:
                    raise
                self._failed(row.id, err)
                if err.code() in PERMANENT:
                    outcomes[row.id] = _reason(err)
                elif err.fatal():
                    fatal.append(_reason(err))
        self.producer.flush(self.config.delivery_timeout_s)
        if fatal:
            # The idempotent producer is unusable (e.g. its sequence broke): start another;
            # the rows it did not deliver go out with the next round.
            log.error("relay: producer failed for good (%s); making a new one", fatal[0])
            self.producer = self._producer()
        return outcomes

    def _failed(self, row_id: int, err: KafkaError) -> None:
        self.stats.failed += 1
        self.stats.errors.append(f"{row_id}: {err.str()}")
        del self.stats.errors[:-100]
        metrics.RELAYED.labels("failed").inc()

    def _park(self, refused: Sequence[tuple[_Row, str]]) -> list[tuple[int, str]]:
        """Dead-letter each refused row; the rows whose letter the broker has, with reasons.
        A row whose letter did not go out stays unparked and is tried again next round."""
        if not refused:
            return []
        letters: dict[int, bool] = {}

        def report(row_id: int) -> Any:
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                letters[row_id] = err is None
                if err is not None:
                    log.warning("relay: dead letter of row %d not delivered: %s", row_id, err)

            return on_delivery

        now_ms = int(time.time() * 1000)
        for row, reason in refused:
            log.error("relay: parking outbox row %d (%s): %s", row.id, row.topic, reason)
            letter, headers = self._letter(row, reason, now_ms)
            try:
                self.producer.produce(
                    self.dlq, letter, row.key, on_delivery=report(row.id), headers=headers
                )
            except (BufferError, KafkaException) as exc:
                log.warning("relay: dead letter of row %d not produced: %s", row.id, exc)
        self.producer.flush(self.config.delivery_timeout_s)
        return [(row.id, reason) for row, reason in refused if letters.get(row.id)]

    def _letter(self, row: _Row, reason: str, now_ms: int) -> tuple[bytes, tracing.KafkaHeaders]:
        payload = row.payload
        if len(payload) > LETTER_PAYLOAD_BYTES:
            payload = payload[:LETTER_PAYLOAD_BYTES]
            reason = (
                f"{reason} (first {LETTER_PAYLOAD_BYTES} of {len(row.payload)} bytes kept; "
                f"all of them in api_outbox row {row.id})"
            )
        letter = DeadLetter(
            source_topic=row.topic,
            partition=-1,  # never in Kafka: api_outbox row `offset` holds it
            offset=row.id,
            key=row.key.decode(errors="replace"),
            kind="undeliverable",
            reason=reason,
            record_name=row.record_name,
            payload=payload,
            consumer=CLIENT_ID,
            at_ms=now_ms,
        )
        name, datum = to_record(letter)
        headers: tracing.KafkaHeaders = [("reason", reason[:200].encode())]
        if row.traceparent:
            headers.append(("traceparent", row.traceparent.encode()))
        return self.codec.encode(name, datum), headers

    def run(self, stop: threading.Event) -> None:
        c = self.config
        with (
            psycopg.connect(c.dsn, connect_timeout=10) as work,
            psycopg.connect(c.dsn, autocommit=True, connect_timeout=10) as listen,
        ):
            listen.execute(f"LISTEN {CHANNEL}")
            while not stop.is_set():
                try:
                    self.relay_once(work)
                    if self.taken >= c.batch_max:
                        continue  # more may be waiting
                except psycopg.OperationalError as exc:
                    log.warning("relay: %s; retrying", exc)
                    stop.wait(1.0)
                    continue
                # Woken by the API's NOTIFY, or after idle_wait_s to catch anything missed.
                for _ in listen.notifies(timeout=c.idle_wait_s, stop_after=1):
                    pass
        self.producer.flush(c.delivery_timeout_s)


def _reason(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"


@contextmanager
def _hop(key: bytes, row_id: int, parent: str | None) -> Iterator[tracing.KafkaHeaders | None]:
    """The record's headers: the context of a span for the hop through the outbox (the child
    of the request's) when tracing is on here; else the request's context as it was stored."""
    if not tracing.ENABLED:
        yield [("traceparent", parent.encode())] if parent else None
        return
    attributes = {"run_id": key.decode(errors="replace"), "outbox_id": row_id}
    origin = tracing.extract({"traceparent": parent} if parent else None)
    with tracing.span("relay publish", attributes, parent=origin, kind=SpanKind.PRODUCER):
        yield tracing.inject([])


@contextmanager
def relaying(config: RelayConfig) -> Iterator[Relay]:
    """A relay in a background thread, stopped on exit (tests)."""
    relay = Relay(config)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True)
    worker.start()
    try:
        yield relay
    finally:
        stop.set()
        worker.join(30)

"""The outbox relay: publish api_outbox rows to Kafka, mark them sent only once delivered.

Rows are taken with ``FOR UPDATE SKIP LOCKED`` so several relays share the work without
sending a row twice at once; a row is marked sent in the same transaction, after the
idempotent producer's delivery report said the broker has it. A crash after delivery and
before the commit sends the row again: the record is keyed by run_id and the coordinator
ignores a StartRun for a run that exists, so the turn still becomes one run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer
from opentelemetry.trace import SpanKind

from runcoord import metrics, tracing
from runcoord.api.turns import CHANNEL
from runcoord.kafka import producer_config

log = logging.getLogger(__name__)

_TAKE = """
SELECT id, topic, record_key, payload, traceparent FROM api_outbox
WHERE sent_at IS NULL AND topic = ANY(%s)
ORDER BY id LIMIT %s
FOR UPDATE SKIP LOCKED
"""


@dataclass(frozen=True)
class RelayConfig:
    bootstrap: str
    dsn: str
    topics: Sequence[str]  # only these topics' rows: each topic set has its own relay
    batch_max: int = 500
    delivery_timeout_s: float = 30.0
    idle_wait_s: float = 1.0  # longest wait for a NOTIFY before looking again anyway


@dataclass
class RelayStats:
    sent: int = 0
    failed: int = 0
    rounds: int = 0
    errors: list[str] = field(default_factory=list)


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.stats = RelayStats()
        overrides: dict[str, Any] = {"delivery.timeout.ms": int(config.delivery_timeout_s * 1000)}
        self.producer = Producer(
            producer_config(config.bootstrap, client_id="runcoord-api-relay", **overrides)
        )

    def relay_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int:
        """Send one batch; return how many rows were marked sent."""
        c = self.config
        with conn.transaction():
            rows = conn.execute(_TAKE, (list(c.topics), c.batch_max)).fetchall()
            if not rows:
                return 0
            delivered: list[int] = []

            def report(row_id: int) -> Any:
                def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                    if err is None:
                        delivered.append(row_id)
                    else:
                        self.stats.failed += 1
                        self.stats.errors.append(f"{row_id}: {err.str()}")
                        metrics.RELAYED.labels("failed").inc()

                return on_delivery

            for row_id, topic, key, payload, parent in rows:
                with _hop(bytes(key), row_id, parent) as headers:
                    self.producer.produce(
                        topic,
                        bytes(payload),
                        bytes(key),
                        on_delivery=report(row_id),
                        headers=headers,
                    )
            self.producer.flush(c.delivery_timeout_s)
            if delivered:
                conn.execute(
                    "UPDATE api_outbox SET sent_at = now() WHERE id = ANY(%s)", (delivered,)
                )
        self.stats.sent += len(delivered)
        self.stats.rounds += 1
        metrics.RELAYED.labels("sent").inc(len(delivered))
        return len(delivered)

    def run(self, stop: threading.Event) -> None:
        c = self.config
        with (
            psycopg.connect(c.dsn, connect_timeout=10) as work,
            psycopg.connect(c.dsn, autocommit=True, connect_timeout=10) as listen,
        ):
            listen.execute(f"LISTEN {CHANNEL}")
            while not stop.is_set():
                try:
                    if self.relay_once(work) >= c.batch_max:
                        continue  # more may be waiting
                except psycopg.OperationalError as exc:
                    log.warning("relay: %s; retrying", exc)
                    stop.wait(1.0)
                    continue
                # Woken by the API's NOTIFY, or after idle_wait_s to catch anything missed.
                for _ in listen.notifies(timeout=c.idle_wait_s, stop_after=1):
                    pass
        self.producer.flush(c.delivery_timeout_s)


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

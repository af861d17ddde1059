"""Thin helpers over confluent-kafka: client configs, topic names, error translation, and a
deadline for calls that can block for ever.

Every Kafka client in runcoord is configured here, and every ``KafkaError`` becomes one of
our exceptions in :func:`error_for`, so a retry decision never inspects librdkafka codes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from runcoord.errors import Fatal, Fenced, KafkaFatal, KafkaRetriable, RuncoordError

_T = TypeVar("_T")

# --------------------------------------------------------------------------- client configs


def producer_config(
    bootstrap: str,
    *,
    transactional_id: str | None = None,
    client_id: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """An idempotent (optionally transactional) producer's config.

    ``overrides`` are librdkafka property names used as given, e.g.
    ``producer_config(b, **{"linger.ms": 0})`` or ``error_cb=...``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        # The Java client's partitioner, so Java and Python producers put a run_id on the
        # same partition (every run-keyed topic is co-partitioned by run_id).
        "partitioner": "murmur2_random",
        # Right after a commit the broker refuses AddOffsetsToTxn with CONCURRENT_TRANSACTIONS
        # while it writes the markers; librdkafka retries after retry.backoff.ms, so the
        # default 100 ms becomes the cost of every transaction (DESIGN.md, "Measured facts":
        # p50 103 ms vs 8.6 ms).
        "retry.backoff.ms": 5,
        "socket.nagle.disable": True,
        # Small: batching pays, but a step deadline is measured in seconds, not in linger.
        "linger.ms": 2,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
    if client_id is not None:
        config["client.id"] = client_id
    config.update(overrides)
    return config


def consumer_config(
    bootstrap: str,
    group_id: str,
    *,
    read_committed: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """A consumer whose offsets are committed explicitly (in a transaction, for EOS loops).

    The assignor is eager (range): every rebalance takes all partitions back and hands all
    of them out again, in one generation. The cooperative one (revoke only what moves, in a
    second rebalance the revoking member asks for by rejoining) loses that second rebalance
    when a static member dies between giving partitions up and rejoining: back under its
    name, it is handed its cached share without a rebalance, and the partitions on their way
    to another member belong to nobody until something else changes the group (a chaos
    replay left three coordinator partitions unowned for minutes). With eager, what a
    restarted static member gets back is its part of a complete assignment. The cost: a
    rebalance pauses every partition and owners rebuild all their runs, not only the moved
    ones; static membership keeps rebalances to scale changes and replicas gone for good.
    A consume-process-produce loop must finish its open transaction in ``on_revoke``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        # Offsets move only with the output they produced (send_offsets_to_transaction).
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "partition.assignment.strategy": "range",
        "socket.nagle.disable": True,
    }
    config.update(overrides)
    return config


def take_batch(consumer: Consumer, max_messages: int, wait_s: float) -> list[Message]:
    """What is ready, up to ``max_messages``, waiting at most ``wait_s`` for the first one.

    ``Consumer.consume(n, timeout)`` returns early only once it holds ``n`` messages: with
    fewer it waits out the whole timeout, so a quiet partition's one record waited the full
    ``wait_s`` on every hop (measured: ``consume(200, 0.5)`` took 500 ms for one record that
    ``poll`` returned in 1 ms). Here the wait ends at the first message, and the rest is
    whatever the client has already fetched: a batch is small when idle and grows with load.
    """
    ready = consumer.consume(max_messages, 0)
    if ready:
        return ready
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


# --------------------------------------------------------------------------- topic names


@dataclass(frozen=True)
class TopicNames:
    """The names of runcoord's topics; a prefix gives each test (or tenant) its own set."""

    inbox: str
    events: str
    state: str
    effects: str
    dlq: str

    @classmethod
    def with_prefix(cls, prefix: str = "") -> TopicNames:
        # Never change these names without a migration: they are the topics of record.
        return cls(
            inbox=f"{prefix}runs.inbox",
            events=f"{prefix}runs.events",
            state=f"{prefix}runs.state",
            effects=f"{prefix}effects",
            dlq=f"{prefix}runs.dlq",
        )

    def all(self) -> tuple[str, ...]:
        return (self.inbox, self.events, self.state, self.effects, self.dlq)


# --------------------------------------------------------------------------- errors


class _CarriesKafkaError(Exception):
    """Mixin: the librdkafka error behind one of our exceptions, and what the caller must do."""

    def __init__(self, message: str, kafka_error: KafkaError, *, requires_abort: bool) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error
        # True when the open transaction must be aborted before anything else (then retry).
        self.requires_abort = requires_abort


class KafkaFencedError(_CarriesKafkaError, Fenced):
    """A newer instance owns our transactional.id (or static member id): we are a zombie."""


class KafkaFatalError(_CarriesKafkaError, KafkaFatal):
    """The client is unusable: close it and build a new one (or stop)."""


class KafkaRetriableError(_CarriesKafkaError, KafkaRetriable):
    """Try again after backing off; abort the open transaction first if ``requires_abort``."""


_FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,  # librdkafka's own fatal "producer fenced"
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.FENCED_INSTANCE_ID,  # a newer static member took our group.instance.id
    }
)


def error_for(err: KafkaError) -> RuncoordError:
    """The one mapping from a librdkafka error to a runcoord exception (not raised)."""
    message = f"{err.name()}: {err.str()}"
    code = err.code()
    if code in _FENCED_CODES:
        return KafkaFencedError(message, err, requires_abort=False)
    if err.fatal():
        return KafkaFatalError(message, err, requires_abort=False)
    if err.retriable() or err.txn_requires_abort():
        return KafkaRetriableError(message, err, requires_abort=err.txn_requires_abort())
    return KafkaFatalError(message, err, requires_abort=False)


def raise_for_error(err: KafkaError | None) -> None:
    """Raise the translated exception for ``err`` (e.g. ``msg.error()``); no-op for None."""
    if err is not None:
        raise error_for(err)


def carries_record(msg: Message, log: logging.Logger, who: str) -> bool:
    """Whether a consumed message carries a record. A fatal consumer error raises (the loop
    rebuilds its session); a retriable one is logged and skipped; end-of-partition is silent."""
    err = msg.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        exc = error_for(err)
        if isinstance(exc, Fatal):
            raise exc
        log.warning("%s consumer: %s", who, exc)
    return False


def translate(exc: KafkaException) -> RuncoordError:
    """The runcoord exception for a ``KafkaException``; use as ``raise translate(e) from e``."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return error_for(err)
    # Raised with a plain message (no KafkaError): nothing says retrying could help.
    return KafkaFatal(str(exc))


# --------------------------------------------------------------------- calls that may hang


class ClientHung(KafkaFatal):
    """A client call did not return by its deadline: the client must be abandoned, not reused."""


class BoundedCalls:
    """Runs one client's blocking calls on a thread of their own, each under a deadline.

    librdkafka can block in ``send_offsets_to_transaction`` far past the timeout it was given
    (librdkafka #5456: the coordinator request's timeout is never checked; #5511: a stale
    group coordinator is never looked up again). Here, after a broker restart in a chaos
    replay, both coordinators sat in it for minutes, their consumers were dropped from the
    group, and every run stalled. A call is run here and waited for ``deadline_s``; past it,
    ``ClientHung`` is raised and every later call raises it at once: the caller rebuilds its
    clients. The blocked thread is a daemon and is left behind with the client it holds
    (the one leak, per hang, that ends when the call finally returns).
    """

    def __init__(self, name: str, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.hung: str | None = None  # what hung, once something has
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def run(self, what: str, fn: Callable[[], _T]) -> _T:
        if self.hung is not None:
            raise ClientHung(f"client abandoned: {self.hung} hung earlier")
        future: Future[_T] = Future()
        self._jobs.put((fn, future))
        try:
            return future.result(self.deadline_s)
        except FutureTimeout:
            self.hung = what
            raise ClientHung(f"{what} did not return in {self.deadline_s:g} s") from None

    def close(self) -> None:
        self._jobs.put(None)  # a hung thread never reads it; it ends with its call

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller, who decides
                    future.set_exception(exc)

"""`runcoord api deliver`: tells tenants' webhooks that an approval waits or a run finished.

Two loops in one process, joined only by PostgreSQL:

The **recorder** is a read_committed consumer of the journal (its own group) shaped like the
forensics projector: for each batch it writes, in one transaction, the run -> tenant map
(RunAccepted carries the tenant; later events do not) and one delivery row per matching hook
and ApprovalRequested / RunFinished, unique per (hook, journal, event id ``run_id:seq``), and
only then commits the batch's offsets. A crash in between redelivers the batch; its rows
exist already, so nobody is notified twice. A hook hears of events journaled after it was
registered: a new group reading the journal from its start tells nobody about old runs.

The tenant comes from that map and not from the forensics projection (forensics_runs):
a run's records share one partition, so its RunAccepted is recorded before, or in the same
transaction as, any later event of the run, whatever the projector's lag, and whether or not
it runs. The map holds live runs only (a run's row goes with its RunFinished). A run missing
from it (its RunAccepted was consumed by no group of ours) is looked up in the projection.

The **sender** claims due rows (``FOR UPDATE SKIP LOCKED``; several deliverers may share the
table), moving each one's next_attempt_at past the attempt's own deadline first, so an
attempt cut short by a crash is due again once that passes. It POSTs each, at most
``concurrency`` at once, signed with the hook's secret (runcoord/api/hooks.py), to an address
checked by the URL guard at this attempt. A 2xx is delivered; 410 Gone disables the hook;
anything else (another status, a transport error, a refused address) is retried with
exponential backoff and jitter (RetryPolicy) until max_attempts or max_age, then the row is
failed with the last reason. Delivery is at least once: a crash after the receiver answered
but before the row says so sends it again, with the same ``webhook-id``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter
from psycopg_pool import ConnectionPool, PoolTimeout

from runcoord.api import hooks
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.domain import events as ev
from runcoord.errors import Retriable, SerializationError
from runcoord.kafka import TopicNames, consumer_config, error_for, take_batch

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

DELIVERIES = Counter(
    "runcoord_webhook_attempts_total",
    "Webhook deliverer: attempts by outcome (delivered, retry, failed, gone, not_sent)",
    ["outcome"],
)
RECORDED = Counter(
    "runcoord_webhook_deliveries_recorded_total", "Webhook deliverer: delivery rows written"
)

# Journal records worth decoding, by their `type` header (the coordinator sets it); a record
# without the header is decoded to find out.
_WANTED = frozenset({b"RunAccepted", b"ApprovalRequested", b"RunFinished"})
USER_AGENT = "runcoord-webhooks/1"


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again: after base·2^(n-1) seconds (n: attempts so far),
    capped at cap_s, each wait drawn between half and all of that (so receivers that failed
    together are not retried together); never after max_attempts attempts, nor past max_age_s
    since the row was written. Defaults: 0.5-1 s, 1-2 s, 2-4 s, … up to 30-60 min apart, at
    most 30 attempts or 24 h (12 attempts in the first ~70 minutes, then about one an hour)."""

    base_s: float = 1.0
    cap_s: float = 3600.0
    max_attempts: int = 30
    max_age_s: float = 86_400.0

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        nominal = min(self.cap_s, self.base_s * 2.0 ** min(max(attempts - 1, 0), 40))
        return nominal / 2 + rng.uniform(0, nominal / 2)

    def gives_up(self, attempts: int, age_s: float, delay_s: float) -> str | None:
        """Why there is no next attempt, or None."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts"
        if age_s + delay_s > self.max_age_s:
            return f"gave up after {age_s / 3600:.1f} h ({attempts} attempts)"
        return None


@dataclass(frozen=True)
class DeliverConfig:
    bootstrap: str
    dsn: str
    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    group_id: str = "runcoord-webhooks-deliver"
    # Private, loopback and link-local targets (never the metadata address): for the operator's
    # own receivers, and tests.
    allow_private: bool = False
    concurrency: int = 8
    # Each of connect, send and read; the resolver has its own (hooks.RESOLVE_TIMEOUT_S).
    timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_max: int = 500
    batch_wait_s: float = 0.2
    # A killed deliverer's partitions wait this long for a restarted one (as the executors').
    session_timeout_ms: int = 10_000
    # How often the sender looks for due retries when nothing wakes it.
    poll_s: float = 0.5
    db_retry_cap_s: float = 10.0

    @property
    def lease_s(self) -> float:
        """How long a claimed row waits before another attempt may take it: longer than an
        attempt can take (resolve, then connect, send and read, each bounded)."""
        return hooks.RESOLVE_TIMEOUT_S + 3 * self.timeout_s + 10.0


@dataclass
class DeliverStats:
    batches: int = 0
    notices: int = 0
    recorded: int = 0
    skipped: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0


# --------------------------------------------------------------------------- the recorder


@dataclass
class Batch:
    """What a batch of journal records asks the recorder to write."""

    accepted: dict[str, str] = field(default_factory=dict)  # run_id -> tenant
    notices: list[hooks.Notice] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


_INSERT_RUNS = """
INSERT INTO api_hook_runs (journal, run_id, tenant)
SELECT %s, r, t FROM unnest(%s::text[], %s::text[]) AS x(r, t)
ON CONFLICT (journal, run_id) DO NOTHING
"""
_INSERT_DELIVERIES = """
INSERT INTO api_hook_deliveries (hook_id, journal, event_id, event_type, run_id, body)
SELECT h, %s, e, k, r, b FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bytea[])
    AS x(h, e, k, r, b)
ON CONFLICT (hook_id, journal, event_id) DO NOTHING
RETURNING id
"""


class Recorder:
    def __init__(
        self,
        config: DeliverConfig,
        stats: DeliverStats,
        *,
        codec: AvroCodec | None = None,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.codec = codec or AvroCodec()
        self.on_recorded = on_recorded
        self.journal = config.topics.events

    def run(self, stop: threading.Event) -> None:
        c = self.config
        overrides = {"session.timeout.ms": c.session_timeout_ms}
        consumer = Consumer(consumer_config(c.bootstrap, c.group_id) | overrides)
        consumer.subscribe([self.journal])
        conn: Conn | None = None
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
                    if batch.notices or batch.accepted:
                        self.record(conn, batch)
                except (psycopg.OperationalError, Retriable) as exc:
                    # Keep the batch and try it again: its offsets were not committed.
                    log.warning("deliver: recording failed (%s); retrying in %.1f s", exc, pause)
                    if conn is not None:
                        conn.close()
                    conn = None
                    stop.wait(pause)
                    pause = min(pause * 2, c.db_retry_cap_s)
                    continue
                pause = 0.1
                pending = []
                self._commit(consumer, batch.offsets)
                if batch.notices:
                    self.on_recorded()
        finally:
            consumer.close()
            if conn is not None:
                conn.close()

    def _commit(self, consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        parts = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]
        try:
            consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partition: its new owner records the batch again, and the
            # unique delivery rows absorb it.
            log.warning("deliver: offset commit failed (%s); the batch will be re-read", exc)

    def decode(self, messages: list[Message]) -> Batch:
        batch = Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise error_for(err)
                log.warning("deliver: %s", error_for(err))
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            batch.offsets[(topic, partition)] = offset
            kind = _header(msg, "type")
            if kind is not None and kind not in _WANTED:
                continue
            try:
                name, datum = self.codec.decode(msg.value() or b"")
                event = from_record(name, datum)
            except SerializationError as exc:
                # Never stops the deliverer (G5); the journal keeps the record.
                self.stats.skipped += 1
                log.error("deliver: skipping %s[%d]@%d: %s", topic, partition, offset, exc)
                continue
            if isinstance(event, ev.RunAccepted):
                batch.accepted[event.run_id] = event.tenant
                continue
            notice = hooks.notice(event)
            if notice is not None:
                batch.notices.append(notice)
            if isinstance(event, ev.RunFinished):
                batch.finished.append(event.run_id)
        return batch

    def record(self, conn: Conn, batch: Batch) -> int:
        """Write the batch's map entries and delivery rows in one transaction; the number of
        new delivery rows."""
        with conn.transaction():
            if batch.accepted:
                conn.execute(
                    _INSERT_RUNS,
                    (self.journal, list(batch.accepted), list(batch.accepted.values())),
                )
            tenants = self._tenants(conn, batch)
            rows = conn.execute(
                "SELECT hook_id, tenant, events, created_at FROM api_hooks "
                "WHERE tenant = ANY(%s) AND deleted_at IS NULL AND disabled_at IS NULL",
                (sorted(set(tenants.values())),),
            ).fetchall()
            by_tenant: dict[str, list[tuple[str, list[str], float]]] = {}
            for hook_id, tenant, events, created_at in rows:
                by_tenant.setdefault(tenant, []).append(
                    (hook_id, list(events), created_at.timestamp() * 1000)
                )
            columns: tuple[list[Any], ...] = ([], [], [], [], [])
            for n in batch.notices:
                tenant = tenants.get(n.run_id)
                for hook_id, events, created_ms in by_tenant.get(tenant or "", []):
                    if n.event_type in events and n.at_ms >= created_ms:
                        row = (hook_id, n.event_id, n.event_type, n.run_id, n.body)
                        for column, value in zip(columns, row, strict=True):
                            column.append(value)
            inserted = 0
            if columns[0]:
                inserted = len(
                    conn.execute(_INSERT_DELIVERIES, (self.journal, *columns)).fetchall()
                )
            if batch.finished:
                conn.execute(
                    "DELETE FROM api_hook_runs WHERE journal = %s AND run_id = ANY(%s)",
                    (self.journal, batch.finished),
                )
        self.stats.batches += 1
        self.stats.notices += len(batch.notices)
        self.stats.recorded += inserted
        RECORDED.inc(inserted)
        return inserted

    def _tenants(self, conn: Conn, batch: Batch) -> dict[str, str]:
        """The tenant of each notice's run: this batch's RunAccepted, else the map, else the
        forensics projection; a run in none of them is logged and told to nobody."""
        runs = {n.run_id for n in batch.notices}
        found = {r: batch.accepted[r] for r in runs if r in batch.accepted}
        for table in ("api_hook_runs", "forensics_runs"):
            missing = sorted(runs - set(found))
            if not missing:
                break
            rows = conn.execute(
                f"SELECT run_id, tenant FROM {table} WHERE journal = %s AND run_id = ANY(%s)",
                (self.journal, missing),
            ).fetchall()
            found.update({str(r): str(t) for r, t in rows})
        for run_id in sorted(runs - set(found)):
            log.warning("deliver: run %s has no known tenant; its events notify nobody", run_id)
        return found


def _header(msg: Message, name: str) -> bytes | None:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == name and value is not None:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


# --------------------------------------------------------------------------- the sender


@dataclass(frozen=True)
class _Due:
    id: int
    hook_id: str
    event_id: str
    body: bytes
    attempts: int
    age_s: float
    url: str
    secret: str
    inactive: str | None  # why the hook takes nothing any more


_CLAIM = """
WITH due AS (
    SELECT id FROM api_hook_deliveries
    WHERE journal = %(journal)s AND state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE api_hook_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => %(lease)s)
FROM due, api_hooks h
WHERE d.id = due.id AND h.hook_id = d.hook_id
RETURNING d.id, d.hook_id, d.event_id, d.body, d.attempts,
    extract(epoch FROM now() - d.created_at)::float8, h.url, h.secret,
    CASE WHEN h.deleted_at IS NOT NULL THEN 'the hook was deleted'
         WHEN h.disabled_at IS NOT NULL THEN 'the hook is disabled: ' || h.disabled_reason
    END
"""


@dataclass(frozen=True)
class _Answer:
    status: int | None  # None: no HTTP answer
    error: str | None

    @property
    def reason(self) -> str:
        return self.error or f"HTTP {self.status}"


class Sender:
    def __init__(
        self,
        config: DeliverConfig,
        stats: DeliverStats,
        *,
        resolve: hooks.Resolver = hooks.resolve_system,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.resolve = resolve
        self.rng = rng or random.Random()
        self.journal = config.topics.events
        self.wake = threading.Event()
        self._transport = transport
        self._in_flight = 0
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        c = self.config
        pool: ConnectionPool[Conn] = ConnectionPool(
            c.dsn,
            min_size=1,
            max_size=c.concurrency + 1,
            kwargs={"autocommit": True, "connect_timeout": 10},
            timeout=c.db_retry_cap_s,
            check=ConnectionPool.check_connection,
            name="runcoord-deliver",
            open=True,
        )
        # No connection is kept or shared: with a request's URL naming an address, a pooled
        # connection could be reused for another host on that address (its TLS name).
        # trust_env=False: a proxy from the environment would resolve the name itself.
        client = httpx.Client(
            timeout=c.timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=self._transport,
            headers={"user-agent": USER_AGENT},
        )
        workers = ThreadPoolExecutor(c.concurrency, thread_name_prefix="deliver")
        pause = 0.1
        try:
            while not stop.is_set():
                self.wake.clear()
                with self._lock:
                    free = c.concurrency - self._in_flight
                claimed: list[_Due] = []
                if free > 0:
                    try:
                        claimed = self._claim(pool, free)
                    except (psycopg.OperationalError, PoolTimeout) as exc:
                        log.warning("deliver: claiming failed (%s); again in %.1f s", exc, pause)
                        stop.wait(pause)
                        pause = min(pause * 2, c.db_retry_cap_s)
                        continue
                    pause = 0.1
                for due in claimed:
                    with self._lock:
                        self._in_flight += 1
                    future = workers.submit(self._attempt, pool, client, due)
                    future.add_done_callback(self._done)
                if len(claimed) < free or free == 0:
                    self.wake.wait(c.poll_s)
        finally:
            workers.shutdown(wait=True)  # in-flight attempts end within their timeouts
            client.close()
            pool.close()

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight -= 1
        exc = future.exception()
        if exc is not None:
            # Its row stays claimed until the lease passes, then is tried again.
            log.error("deliver: an attempt failed unexpectedly: %r", exc)
        self.wake.set()

    def _claim(self, pool: ConnectionPool[Conn], n: int) -> list[_Due]:
        with pool.connection() as conn:
            rows = conn.execute(
                _CLAIM, {"journal": self.journal, "n": n, "lease": self.config.lease_s}
            ).fetchall()
        return [
            _Due(int(r[0]), r[1], r[2], bytes(r[3]), int(r[4]), float(r[5]), r[6], r[7], r[8])
            for r in rows
        ]

    def _attempt(self, pool: ConnectionPool[Conn], client: httpx.Client, due: _Due) -> None:
        if due.inactive is not None:
            self._finish(pool, due, "failed", None, f"not sent: {due.inactive}", sent=False)
            DELIVERIES.labels("not_sent").inc()
            return
        answer = self.send(client, due)
        if answer.status is not None and 200 <= answer.status < 300:
            self._finish(pool, due, "delivered", answer.status, None)
            self.stats.delivered += 1
            DELIVERIES.labels("delivered").inc()
        elif answer.status == 410:
            self._gone(pool, due)
            self.stats.failed += 1
            DELIVERIES.labels("gone").inc()
        else:
            delay = self.config.retry.delay_s(due.attempts, self.rng)
            gave_up = self.config.retry.gives_up(due.attempts, due.age_s, delay)
            if gave_up is not None:
                reason = f"{gave_up}; the last: {answer.reason}"
                self._finish(pool, due, "failed", answer.status, reason)
                self.stats.failed += 1
                DELIVERIES.labels("failed").inc()
                log.warning("deliver: %s to %s: %s", due.event_id, due.hook_id, reason)
            else:
                self._retry(pool, due, answer, delay)
                self.stats.retried += 1
                DELIVERIES.labels("retry").inc()

    def send(self, client: httpx.Client, due: _Due) -> _Answer:
        """One attempt: the URL checked (resolved now), then a POST to an address it resolved
        to (the next one only when connecting fails: nothing was sent)."""
        try:
            target = hooks.check_url(
                due.url, allow_private=self.config.allow_private, resolve=self.resolve
            )
        except hooks.UnsafeUrl as exc:
            return _Answer(None, f"refused: {exc}")
        stamp = int(time.time())
        signed = hooks.signed_headers(due.secret, due.event_id, stamp, due.body)
        error = "no address"
        for address in target.addresses[:3]:
            url, host, extensions = target.request(address)
            try:
                with client.stream(
                    "POST", url, content=due.body, headers={**signed, **host}, extensions=extensions
                ) as response:
                    return _Answer(response.status_code, None)
            except httpx.ConnectError as exc:
                error = f"connecting to {address}: {exc or type(exc).__name__}"
            except httpx.HTTPError as exc:
                return _Answer(None, f"{type(exc).__name__}: {exc}"[:500])
        return _Answer(None, error[:500])

    def _finish(
        self,
        pool: ConnectionPool[Conn],
        due: _Due,
        state: str,
        status: int | None,
        error: str | None,
        *,
        sent: bool = True,
    ) -> None:
        with pool.connection() as conn:
            conn.execute(
                "UPDATE api_hook_deliveries SET state = %s, last_status = %s, last_error = %s, "
                "finished_at = now(), attempts = attempts - %s "
                "WHERE id = %s AND state = 'pending'",
                (state, status, error, 0 if sent else 1, due.id),
            )

    def _retry(self, pool: ConnectionPool[Conn], due: _Due, answer: _Answer, delay: float) -> None:
        with pool.connection() as conn:
            conn.execute(
                "UPDATE api_hook_deliveries SET last_status = %s, last_error = %s, "
                "next_attempt_at = now() + make_interval(secs => %s) "
                "WHERE id = %s AND state = 'pending'",
                (answer.status, answer.error, delay, due.id),
            )

    def _gone(self, pool: ConnectionPool[Conn], due: _Due) -> None:
        """410 Gone: the receiver wants nothing more. The hook is disabled, and its pending
        deliveries are failed with it."""
        reason = "410 Gone"
        log.warning("deliver: %s answered %s; hook %s disabled", due.url, reason, due.hook_id)
        with pool.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE api_hooks SET disabled_at = now(), disabled_reason = %s "
                "WHERE hook_id = %s AND disabled_at IS NULL",
                (f"the receiver answered {reason}", due.hook_id),
            )
            conn.execute(
                "UPDATE api_hook_deliveries SET state = 'failed', last_status = 410, "
                "last_error = %s, finished_at = now() WHERE id = %s AND state = 'pending'",
                (f"{reason}: the hook is disabled", due.id),
            )
            conn.execute(
                "UPDATE api_hook_deliveries SET state = 'failed', last_error = %s, "
                "finished_at = now() WHERE hook_id = %s AND state = 'pending'",
                (f"not sent: the hook was disabled ({reason})", due.hook_id),
            )


# --------------------------------------------------------------------------- both


class Deliverer:
    """The recorder and the sender, each on a thread; ``run`` returns when ``stop`` is set,
    or raises what stopped either of them (the other is stopped first)."""

    def __init__(self, config: DeliverConfig, **sender_options: Any) -> None:
        self.config = config
        self.stats = DeliverStats()
        self.sender = Sender(config, self.stats, **sender_options)
        self.recorder = Recorder(config, self.stats, on_recorded=self.sender.wake.set)

    def run(self, stop: threading.Event) -> None:
        failures: list[BaseException] = []

        def guarded(target: Callable[[threading.Event], None]) -> Callable[[], None]:
            def body() -> None:
                try:
                    target(stop)
                except BaseException as exc:
                    failures.append(exc)
                    stop.set()
                    self.sender.wake.set()

            return body

        threads = [
            threading.Thread(target=guarded(self.recorder.run), name="deliver-recorder"),
            threading.Thread(target=guarded(self.sender.run), name="deliver-sender"),
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            stop.wait(0.5)
            if stop.is_set():
                self.sender.wake.set()
                for t in threads:
                    t.join()
        if failures:
            raise failures[0]

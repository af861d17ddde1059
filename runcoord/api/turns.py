"""Accepting a turn: the turn row and its outbox row in ONE PostgreSQL transaction.

Either both exist or neither: a turn is never accepted without its StartRun on the way to
runs.inbox, and a StartRun is never sent for a turn the client was not told about. The
client's Idempotency-Key makes a retried POST return the same run instead of a second one.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from runcoord import tracing
from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.coordinator.outbox import MAX_RECORD_BYTES
from runcoord.domain.inputs import StartRun

Conn = psycopg.Connection[tuple[Any, ...]]

# The most a turn's StartRun may take as a Kafka record (value, key and headers). One record
# holds at most MAX_RECORD_BYTES (runcoord/coordinator/outbox.py: librdkafka's message.max.bytes,
# 1,000,000 by default; runcoord/kafka.py's producer_config sets none and topics.yaml sets no
# max.message.bytes, so the broker's 1 MiB is above it). The turn's input and metadata travel on
# in the run's RunAccepted event, its create intent and its runs.state snapshot, next to what
# the run adds, so a turn gets a quarter of a record. The largest turn the request model admits
# (32,000 four-byte characters, 14 full metadata pairs) encodes to about 160 kB.
MAX_START_RUN_BYTES = MAX_RECORD_BYTES // 4

# The relay LISTENs on this channel, so a new row goes out at once instead of at the next poll.
CHANNEL = "api_outbox"


class KeyReused(Exception):
    """The Idempotency-Key was first used with another turn."""


class TurnTooLarge(Exception):
    """The turn's StartRun would be over the record limit; nothing was kept."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the turn's StartRun would be {size} bytes; at most {limit} bytes")
        self.size, self.limit = size, limit


@dataclass(frozen=True)
class Turn:
    tenant: str
    thread_id: str
    input: str
    assistant_id: str
    provider: str
    metadata: Mapping[str, str]

    def request_hash(self) -> str:
        body = {
            "thread_id": self.thread_id,
            "input": self.input,
            "assistant_id": self.assistant_id,
            "provider": self.provider,
            "metadata": dict(self.metadata),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    run_id: str
    thread_id: str
    replayed: bool  # True: this key was seen before; the same run is returned


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def enqueue(
    conn: Conn,
    topic: str,
    key: str,
    message: Any,
    codec: AvroCodec,
    *,
    max_bytes: int | None = None,
) -> None:
    """Add an outbox row in the caller's transaction, with the current trace context.
    TurnTooLarge (and no row) when the record would take more than ``max_bytes``."""
    name, datum = to_record(message)
    payload, parent = codec.encode(name, datum), tracing.traceparent()
    if max_bytes is not None:
        # What librdkafka counts against its limit: value, key and headers (traceparent).
        size = len(payload) + len(key.encode()) + (len("traceparent") + len(parent or ""))
        if size > max_bytes:
            raise TurnTooLarge(size, max_bytes)
    conn.execute(
        "INSERT INTO api_outbox (topic, record_key, record_name, payload, traceparent) "
        "VALUES (%s, %s, %s, %s, %s)",
        (topic, key.encode(), name, payload, parent),
    )
    conn.execute(f"NOTIFY {CHANNEL}")


def open_thread(
    conn: Conn, tenant: str, thread_id: str, metadata: Mapping[str, str] | None = None
) -> bool:
    """Record the tenant's conversation; False when it existed already (its metadata kept)."""
    cur = conn.execute(
        "INSERT INTO api_threads (tenant, thread_id, metadata) VALUES (%s, %s, %s) "
        "ON CONFLICT (tenant, thread_id) DO NOTHING",
        (tenant, thread_id, Jsonb(dict(metadata or {}))),
    )
    return cur.rowcount == 1


def accept(
    conn: Conn,
    turn: Turn,
    idempotency_key: str,
    inbox: str,
    codec: AvroCodec,
    *,
    max_bytes: int = MAX_START_RUN_BYTES,
) -> Accepted:
    """Accept the turn, or find the one this key accepted before. KeyReused, TurnTooLarge:
    nothing was written. The thread is the tenant's own conversation: the first turn opens it
    (its provider thread comes later, from the provider executor)."""
    digest = turn.request_hash()
    with conn.transaction():
        open_thread(conn, turn.tenant, turn.thread_id)
        run_id = new_run_id()
        # A concurrent POST with the same key waits here for the first to commit, then
        # finds its row: exactly one run per key, whatever the timing.
        inserted = conn.execute(
            "INSERT INTO api_turns (tenant, idempotency_key, run_id, thread_id, request_hash, "
            "assistant_id, provider, input, inbox) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING run_id",
            (
                turn.tenant,
                idempotency_key,
                run_id,
                turn.thread_id,
                digest,
                turn.assistant_id,
                turn.provider,
                turn.input,
                inbox,
            ),
        ).fetchone()
        if inserted is not None:
            start = StartRun(
                run_id,
                turn.tenant,
                turn.thread_id,
                turn.assistant_id,
                turn.provider,
                turn.input,
                int(time.time() * 1000),
                dict(turn.metadata),
                conversation=True,
            )
            # Raising rolls the whole transaction back: no turn without its outbox row.
            enqueue(conn, inbox, run_id, start, codec, max_bytes=max_bytes)
            return Accepted(run_id, turn.thread_id, replayed=False)
        earlier = conn.execute(
            "UPDATE api_turns SET repeats = repeats + 1, last_repeat_at = now() "
            "WHERE tenant = %s AND idempotency_key = %s RETURNING run_id, thread_id, request_hash",
            (turn.tenant, idempotency_key),
        ).fetchone()
        assert earlier is not None  # the conflicting row exists and rows are never deleted
        if earlier[2] != digest:
            raise KeyReused(idempotency_key)
        return Accepted(str(earlier[0]), str(earlier[1]), replayed=True)

"""A run's events as server-sent events: positions from the projection, records from the
journal by those positions, followed until the run finishes.

Each SSE message carries the event's seq as its id, so a client that reconnects with
``Last-Event-ID`` resumes after it without gaps or repeats.

A stream is an async generator: between polls it waits on the event loop, so an open stream
holds no worker thread and no database connection. Each poll borrows a pooled connection for
its queries (in a worker thread, for as long as they take); the journal is read the same way,
with a reader made on the first event. Every ``recheck_s`` the stream asks ``still_allowed``
(the caller's key is still valid, its slot renewed) and ends when it says no.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
from anyio.to_thread import run_sync
from psycopg_pool import ConnectionPool

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record, to_record
from runcoord.forensics.reader import PositionReader
from runcoord.kafka import TopicNames

KEEPALIVE_S = 10.0

Conn = psycopg.Connection[tuple[Any, ...]]


def frame(seq: int, event_type: str, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {seq}\nevent: {event_type}\ndata: {body}\n\n".encode()


@dataclass(frozen=True)
class Round:
    positions: list[tuple[int, int, int]]  # (seq, partition, offset) after the last one sent
    # The run's last seq once it is over (finished, or its StartRun parked: 0); else None.
    final: int | None


def poll(conn: Conn, journal: str, run_id: str, after: int) -> Round:
    rows = conn.execute(
        "SELECT seq, kafka_partition, kafka_offset FROM forensics_events "
        "WHERE journal = %s AND run_id = %s AND seq > %s ORDER BY seq",
        (journal, run_id, after),
    ).fetchall()
    final = conn.execute(
        "SELECT last_seq FROM forensics_runs WHERE journal = %s AND run_id = %s "
        "AND finished_at IS NOT NULL",
        (journal, run_id),
    ).fetchone()
    if final is None:  # never started: the relay parked its StartRun (see relay.py)
        final = conn.execute(
            "SELECT 0 FROM api_outbox WHERE record_key = %s AND record_name = 'StartRun' "
            "AND failed_at IS NOT NULL LIMIT 1",
            (run_id.encode(),),
        ).fetchone()
    return Round(
        [(int(s), int(p), int(o)) for s, p, o in rows], None if final is None else int(final[0])
    )


async def stream(
    pool: ConnectionPool[Conn],
    bootstrap: str,
    topics: TopicNames,
    run_id: str,
    *,
    after_seq: int = 0,
    follow: bool = True,
    codec: AvroCodec,
    still_allowed: Callable[[], bool] = lambda: True,
    recheck_s: float = 5.0,
    poll_s: float = 0.25,
    max_s: float = 600.0,
    on_end: Callable[[], None] = lambda: None,
) -> AsyncIterator[bytes]:
    """The run's events after ``after_seq``; ``on_end`` runs (in a worker thread, shielded from
    cancellation) however the stream ends: finished, refused, or the client gone."""
    last = after_seq
    deadline = time.monotonic() + max_s
    quiet_since = checked_at = time.monotonic()
    reader: PositionReader | None = None

    def take(after: int) -> Round:
        with pool.connection() as conn:
            return poll(conn, topics.events, run_id, after)

    try:
        while time.monotonic() < deadline:
            if time.monotonic() - checked_at >= recheck_s:
                if not await run_sync(still_allowed):
                    return
                checked_at = time.monotonic()
            got = await run_sync(take, last)
            if got.positions:
                wanted: dict[tuple[str, int], list[int]] = {}
                for _, p, o in got.positions:
                    wanted.setdefault((topics.events, p), []).append(o)
                if reader is None:
                    reader = await run_sync(PositionReader, bootstrap)
                records = await run_sync(reader.fetch, wanted)
                for seq, p, o in got.positions:
                    record = records.get((topics.events, p, o))
                    if seq != last + 1 or record is None or not record.value:
                        break  # keep the stream gap-free: try again on the next round
                    name, datum = codec.decode(record.value)
                    event = from_record(name, datum)
                    yield frame(seq, name, to_record(event)[1])
                    last = seq
                    quiet_since = time.monotonic()
                    if name == "RunFinished":
                        return
            if not follow or (got.final is not None and last >= got.final):
                return
            if time.monotonic() - quiet_since > KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            await anyio.sleep(poll_s)
    finally:
        with anyio.CancelScope(shield=True):
            if reader is not None:
                await run_sync(reader.close)
            await run_sync(on_end)

"""A run's events as server-sent events: positions from the projection, records from the
journal by those positions, followed until the run finishes.

Each SSE message carries the event's seq as its id, so a client that reconnects with
``Last-Event-ID`` resumes after it without gaps or repeats.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record, to_record
from runcoord.forensics.reader import PositionReader
from runcoord.kafka import TopicNames

KEEPALIVE_S = 10.0


def frame(seq: int, event_type: str, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {seq}\nevent: {event_type}\ndata: {body}\n\n".encode()


def stream(
    dsn: str,
    bootstrap: str,
    topics: TopicNames,
    run_id: str,
    *,
    after_seq: int = 0,
    follow: bool = True,
    codec: AvroCodec,
    poll_s: float = 0.25,
    max_s: float = 600.0,
) -> Iterator[bytes]:
    last = after_seq
    deadline = time.monotonic() + max_s
    quiet_since = time.monotonic()
    with (
        psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn,
        PositionReader(bootstrap) as reader,
    ):
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT seq, kafka_partition, kafka_offset FROM forensics_events "
                "WHERE journal = %s AND run_id = %s AND seq > %s ORDER BY seq",
                (topics.events, run_id, last),
            ).fetchall()
            wanted: dict[tuple[str, int], list[int]] = {}
            for _, p, o in rows:
                wanted.setdefault((topics.events, p), []).append(o)
            records = reader.fetch(wanted) if rows else {}
            for seq, p, o in rows:
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
            if not follow or _finished(conn, topics.events, run_id, last):
                return
            if time.monotonic() - quiet_since > KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            time.sleep(poll_s)


def _finished(
    conn: psycopg.Connection[tuple[Any, ...]], journal: str, run_id: str, last: int
) -> bool:
    """The run is over and the client has every event (it resumed after the last one)."""
    row = conn.execute(
        "SELECT last_seq FROM forensics_runs WHERE journal = %s AND run_id = %s "
        "AND finished_at IS NOT NULL",
        (journal, run_id),
    ).fetchone()
    return row is not None and last >= int(row[0])

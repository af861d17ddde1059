"""The evidence that outlives a replay: what explains a run once its topics and database are
gone (run.py deletes them when the replay ends).

For runcoord: the journal (``runs.events``), the effect intents (``effects``), the dead letters
(``runs.dlq``) of the replay's topic prefix, decoded, and every row of the replay database's
``effect_ledger``. For every system: the full ``sandbox_audit`` rows with the tools' answers
(``audit.jsonl`` keeps only what the report needs). File formats:
runcoord/forensics/evidence.py. ``runcoord forensics run RUN_ID --evidence DIR`` tells a run's
story from them; the report reads the journal and the ledger to say why a write is missing.

Collected while the replicas still run, right after the audit log was read: each file is a
snapshot of its moment. A part that fails is listed in ``evidence.json`` with its error; it
never fails the replay (the other evidence is already saved).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from psycopg.rows import dict_row

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.config import Settings
from runcoord.deadletter import DeadLetter
from runcoord.errors import SerializationError
from runcoord.forensics.evidence import AUDIT, DLQ, INTENTS, JOURNAL, LEDGER, MANIFEST, dumps
from runcoord.kafka import TopicNames, consumer_config

log = logging.getLogger(__name__)

# Stop reading a topic when nothing new arrived for this long (the end is normally reached
# in well under a second; an open transaction of a running coordinator holds it back).
IDLE_S = 20.0

_LEDGER_SQL = """
SELECT effect_key, kind, tenant, run_id, step_id, tool_call_id, request_hash, state,
       fencing_token, attempts, lease_owner, lease_expires_at, claimed_at, sent_at,
       completed_at, result, error, created_at, updated_at
FROM effect_ledger ORDER BY claimed_at, effect_key
"""

_AUDIT_SQL = """
SELECT s.id, s.tool, s.tenant, s.run_id, s.tool_call_id, s.payload_hash, s.idempotency_key,
       s.fencing_token, s.acted_at, a.response
FROM sandbox_audit s LEFT JOIN sandbox_actions a ON a.audit_id = s.id ORDER BY s.id
"""


def save_evidence(folder: Path, system: str, settings: Settings, prefix: str, dsn: str) -> None:
    """Save ``system``'s evidence into ``folder`` (see the module's docstring)."""
    started = time.time()
    manifest: dict[str, Any] = {"system": system, "prefix": prefix, "files": {}, "errors": {}}
    parts: list[tuple[str, Callable[[], int]]] = [
        (AUDIT, lambda: _sql(folder / AUDIT, dsn, _AUDIT_SQL, "sandbox_audit")),
    ]
    if system == "runcoord":
        topics = TopicNames.with_prefix(prefix)
        codec = AvroCodec()
        parts += [
            (LEDGER, lambda: _sql(folder / LEDGER, dsn, _LEDGER_SQL, "effect_ledger")),
            (JOURNAL, lambda: _topic(folder / JOURNAL, settings, topics.events, _event, codec)),
            (INTENTS, lambda: _topic(folder / INTENTS, settings, topics.effects, _intent, codec)),
            (DLQ, lambda: _topic(folder / DLQ, settings, topics.dlq, _letter, codec)),
        ]
    for name, save in parts:
        try:
            manifest["files"][name] = save()
        except Exception as exc:  # evidence is best effort; say what is missing and why
            log.exception("evidence: %s not saved", name)
            manifest["errors"][name] = f"{type(exc).__name__}: {exc}"
    manifest["collected_at"] = started
    manifest["took_s"] = round(time.time() - started, 2)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _sql(path: Path, dsn: str, query: str, table: str) -> int:
    count = 0
    with (
        psycopg.connect(dsn, connect_timeout=10, row_factory=dict_row) as conn,
        path.open("w", encoding="utf-8") as out,
    ):
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (table,)).fetchone()
        if not exists or not exists["ok"]:
            return 0
        with conn.cursor(name=f"evidence_{table}") as cursor:  # server-side: any size
            cursor.execute(query)
            for row in cursor:
                out.write(dumps(row) + "\n")
                count += 1
    return count


Decode = Callable[[Any, AvroCodec], dict[str, Any]]


def _topic(path: Path, settings: Settings, topic: str, decode: Decode, codec: AvroCodec) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for msg in read_topic(settings.bootstrap, topic):
            out.write(dumps(decode(msg, codec)) + "\n")
            count += 1
    return count


def read_topic(bootstrap: str, topic: str, idle_s: float = IDLE_S) -> Iterator[Any]:
    """Every committed record of ``topic`` from the beginning to its end as of now, partition
    by partition interleaved as the broker serves them."""
    overrides: dict[str, Any] = {"enable.partition.eof": True, "fetch.wait.max.ms": 50}
    # Assigned, never joined: the group id is only a name, and nothing is committed.
    config = consumer_config(bootstrap, f"runcoord-evidence-{uuid.uuid4().hex[:8]}", **overrides)
    consumer = Consumer(config)
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise RuntimeError(f"topic {topic} not found ({metadata and metadata.error})")
        partitions = sorted(metadata.partitions)
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        active = set(ends)
        last_progress = time.monotonic()
        while active:
            if time.monotonic() - last_progress > idle_s:
                raise RuntimeError(
                    f"reading {topic}: no progress for {idle_s:.0f} s; partitions "
                    f"{sorted(active)} not read to their end"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            last_progress = time.monotonic()
            p = msg.partition() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    active.discard(p)
                    continue
                raise RuntimeError(f"reading {topic}[{p}]: {err}")
            yield msg
            if (msg.offset() or 0) + 1 >= ends.get(p, 0):
                active.discard(p)
    finally:
        consumer.close()


def _position(msg: Any) -> dict[str, Any]:
    return {"partition": msg.partition(), "offset": msg.offset(), "ts_ms": msg.timestamp()[1]}


def _decoded(msg: Any, codec: AvroCodec) -> tuple[str, dict[str, Any]] | str:
    """(record name, datum), or the reason it did not decode."""
    try:
        return codec.decode(msg.value() or b"")
    except SerializationError as exc:
        return str(exc)


def _event(msg: Any, codec: AvroCodec) -> dict[str, Any]:
    decoded = _decoded(msg, codec)
    if isinstance(decoded, str):
        return {**_position(msg), "error": decoded}
    name, datum = decoded
    return {
        **_position(msg),
        "run_id": datum.get("run_id"),
        "seq": datum.get("seq"),
        "type": name,
        "fields": datum,
    }


def _header(msg: Any, name: str) -> str | None:
    for key, value in msg.headers() or []:
        if key == name and value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _intent(msg: Any, codec: AvroCodec) -> dict[str, Any]:
    row = {
        **_position(msg),
        "run_id": (msg.key() or b"").decode(errors="replace"),
        "effect_key": _header(msg, "effect_key"),
        "kind": _header(msg, "kind"),
    }
    decoded = _decoded(msg, codec)
    if isinstance(decoded, str):
        return {**row, "error": decoded}
    name, datum = decoded
    return {**row, "effect_key": row["effect_key"] or datum.get("effect_key"), "type": name,
            "fields": datum}  # fmt: skip


def _letter(msg: Any, codec: AvroCodec) -> dict[str, Any]:
    decoded = _decoded(msg, codec)
    if isinstance(decoded, str):
        return {**_position(msg), "error": decoded}
    name, datum = decoded
    try:
        letter = from_record(name, datum)
    except SerializationError as exc:
        return {**_position(msg), "error": str(exc)}
    if not isinstance(letter, DeadLetter):
        return {**_position(msg), "error": f"{name} is not a dead letter"}
    # What the letter carries, named if it decodes (an Avro record) and kept either way.
    carried = _payload_name(letter.payload, codec)
    return {
        **_position(msg),
        "run_id": letter.key,
        "kind": letter.kind,
        "reason": letter.reason,
        "source_topic": letter.source_topic,
        "source_partition": letter.partition,
        "source_offset": letter.offset,
        "record_name": letter.record_name,
        "payload_record": carried,
        "consumer": letter.consumer,
        "at_ms": letter.at_ms,
        "payload_b64": base64.b64encode(letter.payload).decode(),
    }


def _payload_name(payload: bytes, codec: AvroCodec) -> str | None:
    try:
        return codec.decode(payload)[0]
    except Exception:  # any bytes at all may be dead-lettered
        return None

"""Gather one run's facts: positions from the projection, records from Kafka by those
positions, and the run's rows in the effect ledger and (where present) the sandbox audit.

Finding a run costs a few indexed queries and one seek per cluster of offsets; the journal is
never scanned.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.domain import events as ev
from runcoord.domain import intents as it
from runcoord.domain.ids import effect_key
from runcoord.errors import SerializationError
from runcoord.forensics import store
from runcoord.forensics.facts import (
    AuditEntry,
    IntentEntry,
    JournalEntry,
    LedgerEntry,
    LetterEntry,
    RunFacts,
    ToolInfo,
)
from runcoord.forensics.reader import PositionReader
from runcoord.kafka import TopicNames
from runcoord.registry import Registry

_INTENT_TYPES = it.EffectIntent.__args__


def tool_infos(registry: Registry | None) -> dict[str, ToolInfo]:
    if registry is None:
        return {}
    return {
        name: ToolInfo(name, t.write, t.idempotency, t.lookup is not None, t.timeout_ms)
        for name, t in registry.tools.items()
    }


def gather(
    conn: store.Conn,
    reader: PositionReader,
    topics: TopicNames,
    run_id: str,
    *,
    codec: AvroCodec,
    registry: Registry | None = None,
) -> RunFacts | None:
    journal = topics.events
    run = store.load_runs(conn, journal, [run_id]).get(run_id)
    if run is None:
        return None
    positions = conn.execute(
        "SELECT seq, kafka_partition, kafka_offset FROM forensics_events "
        "WHERE journal = %s AND run_id = %s ORDER BY seq",
        (journal, run_id),
    ).fetchall()
    intent_rows = conn.execute(
        "SELECT kafka_partition, kafka_offset, effect_key, kind, at FROM forensics_intents "
        "WHERE journal = %s AND run_id = %s ORDER BY kafka_partition, kafka_offset",
        (journal, run_id),
    ).fetchall()
    wanted: dict[tuple[str, int], list[int]] = defaultdict(list)
    for _, p, o in positions:
        wanted[(topics.events, p)].append(o)
    for p, o, *_ in intent_rows:
        wanted[(topics.effects, p)].append(o)
    records = reader.fetch(wanted)

    events: list[JournalEntry] = []
    missing: list[int] = []
    for seq, p, o in positions:
        rec = records.get((topics.events, p, o))
        event = _decode(codec, rec.value if rec else None)
        if isinstance(event, ev.Event):
            events.append(JournalEntry(event, p, o))  # type: ignore[arg-type]
        else:
            missing.append(seq)
    intents = []
    for p, o, key, kind, at in intent_rows:
        rec = records.get((topics.effects, p, o))
        intent = _decode(codec, rec.value if rec else None)
        intents.append(
            IntentEntry(
                key,
                kind,
                store.ms(at) or 0,
                p,
                o,
                intent if isinstance(intent, _INTENT_TYPES) else None,
            )
        )
    keys = _effect_keys(run.tenant, run.thread_id, run_id, events, intents)
    call_ids = [c.id for e in events if isinstance(e.event, ev.StepOpened) for c in e.event.calls]
    resubmission = conn.execute(
        "SELECT resubmission_of FROM forensics_runs WHERE journal = %s AND run_id = %s",
        (journal, run_id),
    ).fetchone()
    return RunFacts(
        run=run,
        events=events,
        intents=intents,
        ledger=_ledger(conn, keys),
        audit=_audit(conn, run_id, keys, call_ids),
        letters=_letters(conn, journal, run_id),
        tools=tool_infos(registry),
        missing_seqs=missing,
        resubmission_of=resubmission[0] if resubmission else None,
    )


def _decode(codec: AvroCodec, value: bytes | None) -> Any:
    if not value:
        return None
    try:
        name, datum = codec.decode(value)
        return from_record(name, datum)
    except SerializationError:
        return None


def _effect_keys(
    tenant: str,
    thread_id: str,
    run_id: str,
    events: list[JournalEntry],
    intents: list[IntentEntry],
) -> list[str]:
    # From the journal too, not only the intents: the effects topic keeps 7 days, the ledger
    # and the journal longer, and every key is derivable from the journal.
    keys = {i.effect_key for i in intents}
    for entry in events:
        e = entry.event
        if isinstance(e, ev.RunAccepted):
            keys.add(e.create_key)
        elif isinstance(e, ev.SubmissionRequested):
            keys.add(e.effect_key)
        elif isinstance(e, ev.StepOpened):
            for c in e.calls:
                keys.add(
                    effect_key(
                        tenant=tenant,
                        thread_id=thread_id,
                        run_id=run_id,
                        step=e.step_id,
                        tool_call_id=c.id,
                        kind="tool_call",
                    )
                )
    return sorted(keys)


def _ledger(conn: store.Conn, keys: list[str]) -> list[LedgerEntry]:
    if not _table_exists(conn, "effect_ledger"):
        return []
    rows = conn.execute(
        "SELECT effect_key, kind, state, fencing_token, attempts, lease_owner, claimed_at, "
        "sent_at, completed_at, result, error, step_id, tool_call_id "
        "FROM effect_ledger WHERE effect_key = ANY(%s) ORDER BY claimed_at",
        (keys,),
    ).fetchall()
    return [
        LedgerEntry(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            store.ms(r[6]) or 0,
            store.ms(r[7]),
            store.ms(r[8]),
            r[9],
            r[10],
            r[11],
            r[12],
        )
        for r in rows
    ]


def _audit(conn: store.Conn, run_id: str, keys: list[str], call_ids: list[str]) -> list[AuditEntry]:
    if not _table_exists(conn, "sandbox_audit"):
        return []
    rows = conn.execute(
        "SELECT s.id, s.tool, s.tool_call_id, s.payload_hash, s.idempotency_key, "
        "s.fencing_token, s.acted_at, a.response "
        "FROM sandbox_audit s LEFT JOIN sandbox_actions a ON a.audit_id = s.id "
        "WHERE s.run_id = %s AND (s.idempotency_key = ANY(%s) OR s.tool_call_id = ANY(%s)) "
        "ORDER BY s.acted_at, s.id",
        (run_id, keys, call_ids),
    ).fetchall()
    return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], store.ms(r[6]) or 0, r[7]) for r in rows]


def _letters(conn: store.Conn, journal: str, run_id: str) -> list[LetterEntry]:
    rows = conn.execute(
        "SELECT kind, reason, source_topic, record_name, at FROM forensics_dead_letters "
        "WHERE journal = %s AND run_id = %s ORDER BY at",
        (journal, run_id),
    ).fetchall()
    return [LetterEntry(r[0], r[1], r[2], r[3], store.ms(r[4]) or 0) for r in rows]


def _table_exists(conn: store.Conn, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])

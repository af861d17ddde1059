"""Evidence files: a system's journal, intents, dead letters, effect ledger and audit log saved
as JSONL, and one run's facts read back from them when the topics and tables are gone.

The harness writes them at the end of a replay (runcoord/harness/replay/evidence.py), one
folder per system; ``runcoord forensics run RUN_ID --evidence DIR`` and the report read them.

- ``journal.jsonl``: one ``runs.events`` record a line: partition, offset, ts_ms, run_id, seq,
  type, fields;
- ``intents.jsonl``: one ``effects`` record a line: partition, offset, ts_ms, run_id, effect_key,
  kind, type, fields;
- ``dlq.jsonl``: one ``runs.dlq`` record a line: partition, offset, ts_ms, run_id (the letter's
  key), kind, reason, source_topic, source_partition, source_offset, record_name,
  payload_record, consumer, at_ms, payload_b64;
- ``ledger.jsonl``: one ``effect_ledger`` row a line, every column (timestamps ISO 8601);
- ``sandbox_audit.jsonl``: one ``sandbox_audit`` row a line with the tool's answer (id, tool,
  tenant, run_id, tool_call_id, payload_hash, idempotency_key, fencing_token, acted_at,
  response);
- ``evidence.json``: what was saved (lines per file), what failed and why, when.

``fields`` is the record's Avro datum resolved to the current schema (runcoord.codec), so
:func:`runcoord.codec.wire.from_record` turns it back into the domain value. A record that
did not decode is kept as ``{"partition", "offset", "error"}``.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from runcoord.codec.wire import from_record, to_record
from runcoord.domain import events as ev
from runcoord.domain import intents as it
from runcoord.domain.ids import effect_key
from runcoord.errors import SerializationError
from runcoord.forensics.facts import (
    AuditEntry,
    IntentEntry,
    JournalEntry,
    LedgerEntry,
    LetterEntry,
    RunFacts,
    ToolInfo,
)
from runcoord.forensics.projection import RunRow, fold, input_hash

JOURNAL = "journal.jsonl"
INTENTS = "intents.jsonl"
DLQ = "dlq.jsonl"
LEDGER = "ledger.jsonl"
AUDIT = "sandbox_audit.jsonl"
MANIFEST = "evidence.json"

_JOURNAL_TYPES = ev.JournalEvent.__args__
_INTENT_TYPES = it.EffectIntent.__args__
# As the projection: a run repeating an earlier run's input on the same thread within this
# window is a client resubmission (runcoord/forensics/store.py, RESUBMISSION_WINDOW).
RESUBMISSION_WINDOW_MS = 15 * 60 * 1000


# ----------------------------------------------------------------------------- writing


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(row: Mapping[str, Any]) -> str:
    """One JSONL line (bytes as ``{"$base64": ...}``, datetimes ISO 8601)."""
    return json.dumps(row, separators=(",", ":"), default=_json_default, ensure_ascii=False)


def event_line(
    event: ev.JournalEvent, partition: int = 0, offset: int = 0, ts_ms: int | None = None
) -> dict[str, Any]:
    """The ``journal.jsonl`` line of a journal event (the harness writes the decoded datum of
    each record it reads, which is the same)."""
    name, datum = to_record(event)
    return {
        "partition": partition,
        "offset": offset,
        "ts_ms": event.at_ms if ts_ms is None else ts_ms,
        "run_id": event.run_id,
        "seq": event.seq,
        "type": name,
        "fields": datum,
    }


# ----------------------------------------------------------------------------- reading


def lines(path: Path, contains: str | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file; with ``contains``, only lines with that text (a cheap
    filter before parsing, for finding one run in a large journal)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as source:
        for line in source:
            if not line.strip() or (contains is not None and contains not in line):
                continue
            yield json.loads(line)


def has_journal(folder: Path) -> bool:
    return (folder / JOURNAL).exists()


def decode_event(row: Mapping[str, Any]) -> ev.JournalEvent | None:
    """The journal event of one ``journal.jsonl`` line; None for a record that did not decode."""
    if "type" not in row or "fields" not in row:
        return None
    try:
        event = from_record(str(row["type"]), row["fields"])
    except SerializationError:
        return None
    return event if isinstance(event, _JOURNAL_TYPES) else None


def read_journal(
    folder: Path, run_id: str | None = None, types: frozenset[str] | None = None
) -> list[JournalEntry]:
    """The journal's events (of one run, or all; of some event types, or all), in file order."""
    out: list[JournalEntry] = []
    for row in lines(folder / JOURNAL, run_id):
        if run_id is not None and row.get("run_id") != run_id:
            continue
        if types is not None and row.get("type") not in types:
            continue
        event = decode_event(row)
        if event is not None:
            out.append(JournalEntry(event, int(row["partition"]), int(row["offset"])))
    return out


def read_ledger(folder: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    return [
        row
        for row in lines(folder / LEDGER, run_id)
        if run_id is None or row.get("run_id") == run_id
    ]


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return round(value * 1000)
    return round(datetime.fromisoformat(str(value)).timestamp() * 1000)


def ledger_entry(row: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        effect_key=row["effect_key"],
        kind=row["kind"],
        state=row["state"],
        fencing_token=int(row["fencing_token"]),
        attempts=int(row["attempts"]),
        lease_owner=row.get("lease_owner"),
        claimed_at_ms=_ms(row.get("claimed_at")) or 0,
        sent_at_ms=_ms(row.get("sent_at")),
        completed_at_ms=_ms(row.get("completed_at")),
        result=row.get("result"),
        error=row.get("error"),
        step_id=row.get("step_id"),
        tool_call_id=row.get("tool_call_id"),
    )


def _intents(folder: Path, run_id: str) -> list[IntentEntry]:
    out = []
    for row in lines(folder / INTENTS, run_id):
        if row.get("run_id") != run_id or "effect_key" not in row:
            continue
        intent: Any = None
        if "type" in row and "fields" in row:
            try:
                intent = from_record(str(row["type"]), row["fields"])
            except SerializationError:
                intent = None
        out.append(
            IntentEntry(
                row["effect_key"],
                str(row.get("kind") or ""),
                int(row.get("ts_ms") or 0),
                int(row["partition"]),
                int(row["offset"]),
                intent if isinstance(intent, _INTENT_TYPES) else None,
            )
        )
    return out


def _audit(folder: Path, run_id: str, keys: set[str], call_ids: set[str]) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    if (folder / AUDIT).exists():
        for row in lines(folder / AUDIT, run_id):
            if row.get("run_id") != run_id:
                continue
            if row.get("idempotency_key") not in keys and row.get("tool_call_id") not in call_ids:
                continue
            out.append(
                AuditEntry(
                    int(row["id"]),
                    row["tool"],
                    row.get("tool_call_id"),
                    row["payload_hash"],
                    row.get("idempotency_key"),
                    row.get("fencing_token"),
                    _ms(row.get("acted_at")) or 0,
                    row.get("response"),
                )
            )
    else:  # an older evidence folder: the report's audit.jsonl (no ids, tokens or answers)
        for number, row in enumerate(lines(folder / "audit.jsonl"), 1):
            if row.get("run_id") != run_id:
                continue
            if row.get("idempotency_key") not in keys and row.get("tool_call_id") not in call_ids:
                continue
            out.append(
                AuditEntry(
                    number,
                    row["tool"],
                    row.get("tool_call_id"),
                    row["payload_hash"],
                    row.get("idempotency_key"),
                    None,
                    _ms(row.get("acted_at")) or 0,
                )
            )
    out.sort(key=lambda a: (a.acted_at_ms, a.audit_id))
    return out


def _letters(folder: Path, run_id: str) -> list[LetterEntry]:
    return [
        LetterEntry(
            str(row.get("kind")),
            str(row.get("reason")),
            str(row.get("source_topic")),
            row.get("record_name"),
            int(row.get("at_ms") or 0),
        )
        for row in lines(folder / DLQ, run_id)
        if row.get("run_id") == run_id and "reason" in row
    ]


def _resubmission_of(folder: Path, accepted: ev.RunAccepted) -> str | None:
    """The latest earlier run of the same tenant, thread and input within the window."""
    best: tuple[int, str] | None = None
    for row in lines(folder / JOURNAL, '"RunAccepted"'):
        if row.get("type") != "RunAccepted" or row.get("run_id") == accepted.run_id:
            continue
        other = decode_event(row)
        if not isinstance(other, ev.RunAccepted):
            continue
        same = (other.tenant, other.thread_id, input_hash(other.input)) == (
            accepted.tenant,
            accepted.thread_id,
            input_hash(accepted.input),
        )
        if same and accepted.at_ms - RESUBMISSION_WINDOW_MS <= other.at_ms <= accepted.at_ms:
            candidate = (other.at_ms, other.run_id)
            if best is None or candidate > best:
                best = candidate
    return best[1] if best else None


def locate(path: Path, run_id: str) -> Path | None:
    """The system folder under ``path`` whose journal has ``run_id`` (``path`` itself if it is
    one); None when no journal there names it."""
    candidates = [path]
    if not has_journal(path):
        candidates = sorted(
            (p for p in path.iterdir() if p.is_dir() and has_journal(p)),
            key=lambda p: (p.name != "runcoord", p.name),
        )
    for folder in candidates:
        if any(True for _ in read_journal(folder, run_id, frozenset({"RunAccepted"}))):
            return folder
    return None


def gather_from_evidence(
    folder: Path, run_id: str, tools: Mapping[str, ToolInfo] | None = None
) -> RunFacts | None:
    """One run's facts from a system's evidence folder, as :func:`gather` reads them from the
    projection, Kafka and PostgreSQL; None when the journal has no RunAccepted for it."""
    entries = read_journal(folder, run_id)
    by_seq: dict[int, JournalEntry] = {}
    for entry in entries:
        by_seq.setdefault(entry.event.seq, entry)
    events = [by_seq[s] for s in sorted(by_seq)]
    row: RunRow | None = None
    for entry in events:
        row = fold(row, entry.event, entry.partition, entry.offset)
    if row is None:
        return None
    accepted = next(e.event for e in events if isinstance(e.event, ev.RunAccepted))
    assert isinstance(accepted, ev.RunAccepted)  # fold() starts a row only at one
    intents = _intents(folder, run_id)
    keys = {i.effect_key for i in intents} | {accepted.create_key}
    call_ids: set[str] = set()
    for entry in events:
        e = entry.event
        if isinstance(e, ev.SubmissionRequested):
            keys.add(e.effect_key)
        elif isinstance(e, ev.StepOpened):
            for c in e.calls:
                call_ids.add(c.id)
                keys.add(
                    effect_key(
                        tenant=row.tenant,
                        thread_id=row.thread_id,
                        run_id=run_id,
                        step=e.step_id,
                        tool_call_id=c.id,
                        kind="tool_call",
                    )
                )
    ledger = [ledger_entry(r) for r in read_ledger(folder, run_id) if r["effect_key"] in keys]
    ledger.sort(key=lambda led: led.claimed_at_ms)
    present = set(by_seq)
    missing = [s for s in range(1, row.last_seq + 1) if s not in present]
    return RunFacts(
        run=row,
        events=events,
        intents=intents,
        ledger=ledger,
        audit=_audit(folder, run_id, keys, call_ids),
        letters=_letters(folder, run_id),
        tools=dict(tools or {}),
        missing_seqs=missing,
        resubmission_of=_resubmission_of(folder, accepted),
    )


def events_by_run(
    folder: Path, types: frozenset[str] | None = None
) -> dict[str, list[ev.JournalEvent]]:
    """Every run's events (of ``types``, or all), in seq order: what the report reads."""
    out: dict[str, dict[int, ev.JournalEvent]] = defaultdict(dict)
    for entry in read_journal(folder, types=types):
        out[entry.event.run_id].setdefault(entry.event.seq, entry.event)
    return {run: [events[s] for s in sorted(events)] for run, events in out.items()}

"""The projection's SQL: writing a batch idempotently, and reading a run back.

Every statement is an upsert keyed by the record's identity ((run_id, seq) for events, the
Kafka position for intents and dead letters), and a run's row only moves forward (its
``last_seq`` guards the update), so applying a batch twice, or two projectors racing through a
rebalance, leaves the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from forensics.projection import EventRow, RunRow, StepRow

Conn = psycopg.Connection[tuple[Any, ...]]

# A run that repeats an earlier run's input on the same thread within this window is a client
# resubmission (the client sent the turn again instead of retrying with its idempotency key).
RESUBMISSION_WINDOW = "15 minutes"


def ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def ms(at: datetime | None) -> int | None:
    return None if at is None else round(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class IntentRow:
    partition: int
    offset: int
    run_id: str
    effect_key: str
    kind: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class LetterRow:
    partition: int
    offset: int
    run_id: str | None
    kind: str
    reason: str
    source_topic: str
    record_name: str | None
    at_ms: int


_RUN_COLUMNS = (
    "run_id, tenant, thread_id, provider, input_hash, kafka_partition, first_offset, "
    "last_offset, last_seq, phase, accepted_at, updated_at, provider_status, provider_run_id, "
    "watch_seq, steps, outcome, finished_at"
)

_UPSERT_RUN = f"""
INSERT INTO forensics_runs (journal, {_RUN_COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (journal, run_id) DO UPDATE SET
    last_offset = EXCLUDED.last_offset, last_seq = EXCLUDED.last_seq, phase = EXCLUDED.phase,
    updated_at = EXCLUDED.updated_at, provider_status = EXCLUDED.provider_status,
    provider_run_id = EXCLUDED.provider_run_id, watch_seq = EXCLUDED.watch_seq,
    steps = EXCLUDED.steps, outcome = EXCLUDED.outcome, finished_at = EXCLUDED.finished_at
WHERE forensics_runs.last_seq < EXCLUDED.last_seq
"""

_INSERT_EVENT = """
INSERT INTO forensics_events
    (journal, run_id, seq, kafka_partition, kafka_offset, event_type, at, note)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (journal, run_id, seq) DO NOTHING
"""

_STEP_OPENED = """
INSERT INTO forensics_steps (journal, run_id, step_id, opened_at, deadline_at, calls)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (journal, run_id, step_id) DO NOTHING
"""

_STEP_SUBMISSION = """
UPDATE forensics_steps
SET submission_at = coalesce(submission_at, %s),
    submission_reason = coalesce(submission_reason, %s)
WHERE journal = %s AND run_id = %s AND step_id = %s
"""

_STEP_SUBMITTED = """
UPDATE forensics_steps
SET submitted_at = coalesce(submitted_at, %s), outcome = coalesce(outcome, %s)
WHERE journal = %s AND run_id = %s AND step_id = %s
"""

_INSERT_INTENT = """
INSERT INTO forensics_intents
    (journal, kafka_partition, kafka_offset, run_id, effect_key, kind, at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (journal, kafka_partition, kafka_offset) DO NOTHING
"""

_INSERT_LETTER = """
INSERT INTO forensics_dead_letters
    (journal, kafka_partition, kafka_offset, run_id, kind, reason, source_topic, record_name, at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (journal, kafka_partition, kafka_offset) DO NOTHING
"""

# Set once, when the run is first projected; a later earlier-run cannot appear (accepted_at
# only grows along a thread), so recomputing it on redelivery gives the same answer.
_RESUBMISSIONS = f"""
UPDATE forensics_runs r SET resubmission_of = (
    SELECT p.run_id FROM forensics_runs p
    WHERE p.journal = r.journal AND p.tenant = r.tenant AND p.thread_id = r.thread_id
      AND p.input_hash = r.input_hash AND p.run_id <> r.run_id
      AND p.accepted_at <= r.accepted_at
      AND p.accepted_at >= r.accepted_at - interval '{RESUBMISSION_WINDOW}'
    ORDER BY p.accepted_at DESC, p.run_id DESC LIMIT 1)
WHERE r.journal = %s AND r.run_id = ANY(%s) AND r.resubmission_of IS NULL
"""


def load_runs(conn: Conn, journal: str, run_ids: Sequence[str]) -> dict[str, RunRow]:
    if not run_ids:
        return {}
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM forensics_runs WHERE journal = %s AND run_id = ANY(%s)",
        (journal, list(run_ids)),
    ).fetchall()
    return {r[0]: run_from_sql(r) for r in rows}


def run_from_sql(r: Sequence[Any]) -> RunRow:
    return RunRow(
        run_id=r[0],
        tenant=r[1],
        thread_id=r[2],
        provider=r[3],
        input_hash=r[4],
        partition=r[5],
        first_offset=r[6],
        last_offset=r[7],
        last_seq=r[8],
        phase=r[9],
        accepted_at_ms=ms(r[10]) or 0,
        updated_at_ms=ms(r[11]) or 0,
        provider_status=r[12],
        provider_run_id=r[13],
        watch_seq=r[14],
        steps=r[15],
        outcome=r[16],
        finished_at_ms=ms(r[17]),
    )


def write_batch(
    conn: Conn,
    journal: str,
    *,
    runs: Iterable[RunRow],
    new_runs: Sequence[str],
    events: Iterable[EventRow],
    steps: Iterable[StepRow],
    intents: Iterable[IntentRow],
    letters: Iterable[LetterRow],
) -> None:
    """Write one batch in the caller's transaction."""
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_EVENT,
            [
                (journal, e.run_id, e.seq, e.partition, e.offset, e.event_type, ts(e.at_ms), e.note)
                for e in events
            ],
        )
        cur.executemany(
            _UPSERT_RUN,
            [
                (
                    journal,
                    r.run_id,
                    r.tenant,
                    r.thread_id,
                    r.provider,
                    r.input_hash,
                    r.partition,
                    r.first_offset,
                    r.last_offset,
                    r.last_seq,
                    r.phase,
                    ts(r.accepted_at_ms),
                    ts(r.updated_at_ms),
                    r.provider_status,
                    r.provider_run_id,
                    r.watch_seq,
                    r.steps,
                    r.outcome,
                    ts(r.finished_at_ms),
                )
                for r in runs
            ],
        )
        _write_steps(cur, journal, steps)
        cur.executemany(
            _INSERT_INTENT,
            [
                (journal, i.partition, i.offset, i.run_id, i.effect_key, i.kind, ts(i.at_ms))
                for i in intents
            ],
        )
        cur.executemany(
            _INSERT_LETTER,
            [
                (
                    journal,
                    d.partition,
                    d.offset,
                    d.run_id,
                    d.kind,
                    d.reason,
                    d.source_topic,
                    d.record_name,
                    ts(d.at_ms),
                )
                for d in letters
            ],
        )
        if new_runs:
            cur.execute(_RESUBMISSIONS, (journal, list(new_runs)))


def _write_steps(
    cur: psycopg.Cursor[tuple[Any, ...]], journal: str, steps: Iterable[StepRow]
) -> None:
    # In journal order: a step is opened before its submission is requested or confirmed.
    opened, submissions, submitted = [], [], []
    for s in steps:
        if s.opened:
            opened.append((journal, s.run_id, s.step_id, ts(s.at_ms), ts(s.deadline_ms), s.calls))
        elif s.submission_reason is not None:
            submissions.append((ts(s.at_ms), s.submission_reason, journal, s.run_id, s.step_id))
        elif s.outcome is not None:
            submitted.append((ts(s.at_ms), s.outcome, journal, s.run_id, s.step_id))
    cur.executemany(_STEP_OPENED, opened)
    cur.executemany(_STEP_SUBMISSION, submissions)
    cur.executemany(_STEP_SUBMITTED, submitted)

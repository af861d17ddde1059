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

from runcoord.forensics.projection import ApprovalRow, DecisionRow, EventRow, RunRow, StepRow

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

_INSERT_LETTER = """
INSERT INTO forensics_dead_letters
    (journal, kafka_partition, kafka_offset, run_id, kind, reason, source_topic, record_name, at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (journal, kafka_partition, kafka_offset) DO NOTHING
"""

# Set once, when the run is first projected; a later earlier-run cannot appear (accepted_at
# only grows along a thread), so recomputing it on redelivery gives the same answer.
# Set once, when the run is first projected; a later earlier-run cannot appear (accepted_at
# only grows along a thread), so recomputing it on redelivery gives the same answer. Only the
# few runs that have an earlier twin are written.
_RESUBMISSIONS = f"""
UPDATE forensics_runs r SET resubmission_of = x.earlier
FROM (
    SELECT n.run_id, e.run_id AS earlier
    FROM unnest(%(run_ids)s::text[], %(tenants)s::text[], %(threads)s::text[],
                %(inputs)s::text[], %(accepted)s::timestamptz[])
         AS n(run_id, tenant, thread_id, input_hash, accepted_at)
    CROSS JOIN LATERAL (
        SELECT p.run_id FROM forensics_runs p
        WHERE p.journal = %(journal)s AND p.tenant = n.tenant AND p.thread_id = n.thread_id
          AND p.input_hash = n.input_hash AND p.run_id <> n.run_id
          AND p.accepted_at <= n.accepted_at
          AND p.accepted_at >= n.accepted_at - interval '{RESUBMISSION_WINDOW}'
        ORDER BY p.accepted_at DESC, p.run_id DESC LIMIT 1) e
) x
WHERE r.journal = %(journal)s AND r.run_id = x.run_id AND r.resubmission_of IS NULL
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


# Batches go through session temp tables filled with COPY, then one set-based statement per
# target: an order of magnitude faster than row-by-row statements at a million events.
_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS _fx_events (LIKE forensics_events) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _fx_intents (LIKE forensics_intents) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _fx_runs (LIKE forensics_runs) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _fx_steps (
    run_id text, step_id text, at timestamptz, opened boolean, deadline_at timestamptz,
    calls integer, submission_reason text, outcome text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _fx_approvals (LIKE forensics_approvals) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _fx_decisions (
    approval_id text, decision text, reason text, approver text, decided_at timestamptz
) ON COMMIT DELETE ROWS;
"""

_MERGE_EVENTS = "INSERT INTO forensics_events SELECT * FROM _fx_events ON CONFLICT DO NOTHING"
_MERGE_INTENTS = "INSERT INTO forensics_intents SELECT * FROM _fx_intents ON CONFLICT DO NOTHING"
_MERGE_RUNS = f"""
INSERT INTO forensics_runs (journal, {_RUN_COLUMNS})
SELECT journal, {_RUN_COLUMNS} FROM _fx_runs
ON CONFLICT (journal, run_id) DO UPDATE SET
    last_offset = EXCLUDED.last_offset, last_seq = EXCLUDED.last_seq, phase = EXCLUDED.phase,
    updated_at = EXCLUDED.updated_at, provider_status = EXCLUDED.provider_status,
    provider_run_id = EXCLUDED.provider_run_id, watch_seq = EXCLUDED.watch_seq,
    steps = EXCLUDED.steps, outcome = EXCLUDED.outcome, finished_at = EXCLUDED.finished_at
WHERE forensics_runs.last_seq < EXCLUDED.last_seq
"""
_MERGE_STEPS = (
    """INSERT INTO forensics_steps (journal, run_id, step_id, opened_at, deadline_at, calls)
    SELECT %s, run_id, step_id, at, deadline_at, calls FROM _fx_steps WHERE opened
    ON CONFLICT (journal, run_id, step_id) DO NOTHING""",
    """UPDATE forensics_steps s
    SET submission_at = coalesce(s.submission_at, t.at),
        submission_reason = coalesce(s.submission_reason, t.submission_reason)
    FROM _fx_steps t
    WHERE t.submission_reason IS NOT NULL
      AND s.journal = %s AND s.run_id = t.run_id AND s.step_id = t.step_id""",
    """UPDATE forensics_steps s
    SET submitted_at = coalesce(s.submitted_at, t.at), outcome = coalesce(s.outcome, t.outcome)
    FROM _fx_steps t
    WHERE t.outcome IS NOT NULL
      AND s.journal = %s AND s.run_id = t.run_id AND s.step_id = t.step_id""",
)

_APPROVAL_COLUMNS = (
    "journal, approval_id, run_id, tenant, step_id, tool_call_id, tool, arguments_hash, "
    "policy_version, request_seq, deadline_at, requested_at, status"
)
# A request is inserted once; its decision moves only a pending row, so the first decision
# projected stays whatever is redelivered. The domain journals one decision per approval; a
# batch naming one twice (a redelivery within it) keeps the earliest.
_MERGE_APPROVALS = (
    f"""INSERT INTO forensics_approvals ({_APPROVAL_COLUMNS})
    SELECT {_APPROVAL_COLUMNS} FROM _fx_approvals ON CONFLICT DO NOTHING""",
    """UPDATE forensics_approvals a
    SET status = d.decision, reason = d.reason, approver = d.approver, decided_at = d.decided_at
    FROM (SELECT DISTINCT ON (approval_id) * FROM _fx_decisions
          ORDER BY approval_id, decided_at) d
    WHERE a.journal = %s AND a.approval_id = d.approval_id AND a.status = 'pending'""",
)


def write_batch(
    conn: Conn,
    journal: str,
    *,
    runs: Iterable[RunRow],
    new_runs: Sequence[RunRow],
    events: Iterable[EventRow],
    steps: Iterable[StepRow],
    intents: Iterable[IntentRow],
    letters: Iterable[LetterRow],
    approvals: Sequence[ApprovalRow] = (),
    decisions: Sequence[DecisionRow] = (),
) -> None:
    """Write one batch in the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute(_TEMP.encode())
        _copy(
            cur,
            "_fx_events",
            "journal, run_id, seq, kafka_partition, kafka_offset, event_type, at, note",
            (
                (journal, e.run_id, e.seq, e.partition, e.offset, e.event_type, ts(e.at_ms), e.note)
                for e in events
            ),
        )
        _copy(
            cur,
            "_fx_runs",
            f"journal, {_RUN_COLUMNS}",
            (
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
            ),
        )
        _copy(
            cur,
            "_fx_steps",
            "run_id, step_id, at, opened, deadline_at, calls, submission_reason, outcome",
            (
                (
                    s.run_id,
                    s.step_id,
                    ts(s.at_ms),
                    s.opened,
                    ts(s.deadline_ms),
                    s.calls,
                    s.submission_reason,
                    s.outcome,
                )
                for s in steps
            ),
        )
        _copy(
            cur,
            "_fx_intents",
            "journal, kafka_partition, kafka_offset, run_id, effect_key, kind, at",
            (
                (journal, i.partition, i.offset, i.run_id, i.effect_key, i.kind, ts(i.at_ms))
                for i in intents
            ),
        )
        # Events first: a run's row never points past events that are not stored.
        cur.execute(_MERGE_EVENTS)
        cur.execute(_MERGE_RUNS)
        for statement in _MERGE_STEPS:
            cur.execute(statement, (journal,))
        if approvals or decisions:
            _write_approvals(cur, journal, approvals, decisions)
        cur.execute(_MERGE_INTENTS)
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
            cur.execute(
                _RESUBMISSIONS,
                {
                    "journal": journal,
                    "run_ids": [r.run_id for r in new_runs],
                    "tenants": [r.tenant for r in new_runs],
                    "threads": [r.thread_id for r in new_runs],
                    "inputs": [r.input_hash for r in new_runs],
                    "accepted": [ts(r.accepted_at_ms) for r in new_runs],
                },
            )


def _write_approvals(
    cur: psycopg.Cursor[tuple[Any, ...]],
    journal: str,
    approvals: Sequence[ApprovalRow],
    decisions: Sequence[DecisionRow],
) -> None:
    """The batch's approval requests, then their decisions (see _MERGE_APPROVALS). Only for
    a batch that holds any: most hold none, and skip these round trips."""
    _copy(
        cur,
        "_fx_approvals",
        _APPROVAL_COLUMNS,
        (
            (
                journal,
                a.approval_id,
                a.run_id,
                a.tenant,
                a.step_id,
                a.tool_call_id,
                a.tool,
                a.arguments_hash,
                a.policy_version,
                a.request_seq,
                ts(a.deadline_ms),
                ts(a.requested_at_ms),
                "pending",
            )
            for a in approvals
        ),
    )
    _copy(
        cur,
        "_fx_decisions",
        "approval_id, decision, reason, approver, decided_at",
        ((d.approval_id, d.decision, d.reason, d.approver, ts(d.decided_at_ms)) for d in decisions),
    )
    # Requests before decisions: a batch may hold both of one approval.
    cur.execute(_MERGE_APPROVALS[0])
    cur.execute(_MERGE_APPROVALS[1], (journal,))


def _copy(
    cur: psycopg.Cursor[tuple[Any, ...]], table: str, columns: str, rows: Iterable[tuple[Any, ...]]
) -> None:
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)

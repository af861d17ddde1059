"""Anomalies across runs in a time range, from the projection's indexes, the effect ledger and
the gateway's audit log. Nothing here reads Kafka."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runcoord.forensics import store
from runcoord.forensics.clusters import (
    WINDOW_MS,
    Action,
    Cluster,
    RunLink,
    attribute,
    find_clusters,
)

# A step "neared its deadline" when its outputs went in with less than this share of its
# budget left (or when the deadline itself answered them).
NEAR_DEADLINE_SHARE = 0.2


@dataclass
class Scan:
    start: datetime
    end: datetime
    clusters: list[Cluster] = field(default_factory=list)
    unknown_outcomes: list[dict[str, Any]] = field(default_factory=list)
    near_deadline: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    resubmissions: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "duplicate_clusters": len(self.clusters),
            "unknown_outcomes": len(self.unknown_outcomes),
            "near_deadline": len(self.near_deadline),
            "dead_letters": len(self.dead_letters),
            "client_resubmissions": len(self.resubmissions),
        }


def _exists(conn: store.Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _dicts(conn: store.Conn, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


_CLUSTER_ROWS = """
SELECT id, tool, tenant, payload_hash, run_id, tool_call_id, idempotency_key, acted_at FROM (
    SELECT s.*,
           lag(acted_at) OVER w AS prev_at, lead(acted_at) OVER w AS next_at
    FROM sandbox_audit s
    WHERE acted_at >= %(lo)s AND acted_at < %(hi)s
    WINDOW w AS (PARTITION BY tool, tenant, payload_hash ORDER BY acted_at, id)
) x
WHERE acted_at - prev_at <= %(window)s OR next_at - acted_at <= %(window)s
"""


def duplicate_clusters(
    conn: store.Conn, journal: str, start: datetime, end: datetime, tenant: str | None = None
) -> list[Cluster]:
    if not _exists(conn, "sandbox_audit"):
        return []
    window = timedelta(milliseconds=WINDOW_MS)
    rows = conn.execute(
        _CLUSTER_ROWS, {"lo": start - window, "hi": end + window, "window": window}
    ).fetchall()
    actions = [
        Action(r[0], r[1], r[2], r[3], r[4], r[5], r[6], store.ms(r[7]) or 0)
        for r in rows
        if tenant is None or r[2] == tenant
    ]
    lo, hi = store.ms(start) or 0, store.ms(end) or 0
    clusters = [c for c in find_clusters(actions) if lo <= c.actions[0].acted_at_ms < hi]
    run_ids = sorted({a.run_id for c in clusters for a in c.actions if a.run_id})
    links = _links(conn, journal, run_ids)
    return [attribute(c, links) for c in clusters]


def _links(conn: store.Conn, journal: str, run_ids: list[str]) -> dict[str, RunLink]:
    links: dict[str, RunLink] = {}
    todo = run_ids
    # Follow resubmission chains to their first run (a handful of hops at most).
    for _ in range(5):
        if not todo:
            break
        rows = conn.execute(
            "SELECT run_id, thread_id, input_hash, resubmission_of FROM forensics_runs "
            "WHERE journal = %s AND run_id = ANY(%s)",
            (journal, todo),
        ).fetchall()
        for r in rows:
            links[r[0]] = RunLink(r[0], r[1], r[2], r[3])
        todo = sorted({r[3] for r in rows if r[3] and r[3] not in links})
    return links


def scan(
    conn: store.Conn, journal: str, start: datetime, end: datetime, tenant: str | None = None
) -> Scan:
    result = Scan(start, end)
    result.clusters = duplicate_clusters(conn, journal, start, end, tenant)
    p = {"journal": journal, "lo": start, "hi": end, "tenant": tenant}
    if _exists(conn, "effect_ledger"):
        # Scoped to this journal through the intents it indexed (the ledger is shared).
        result.unknown_outcomes = _dicts(
            conn,
            """SELECT l.run_id, l.kind, l.tool_call_id, l.effect_key, l.completed_at, l.error,
                      l.result
               FROM effect_ledger l
               WHERE l.state = 'unknown' AND l.completed_at >= %(lo)s AND l.completed_at < %(hi)s
                 AND (%(tenant)s::text IS NULL OR l.tenant = %(tenant)s)
                 AND EXISTS (SELECT 1 FROM forensics_intents i
                             WHERE i.journal = %(journal)s AND i.effect_key = l.effect_key)
               ORDER BY l.completed_at""",
            p,
        )
    result.near_deadline = _dicts(
        conn,
        f"""SELECT s.run_id, s.step_id, s.opened_at, s.deadline_at, s.submission_at,
                   s.submission_reason, s.outcome,
                   extract(epoch FROM s.deadline_at - s.submission_at)::float8 AS margin_s,
                   extract(epoch FROM s.deadline_at - s.opened_at)::float8 AS budget_s
            FROM forensics_steps s JOIN forensics_runs r USING (journal, run_id)
            WHERE s.journal = %(journal)s AND s.opened_at >= %(lo)s AND s.opened_at < %(hi)s
              AND (%(tenant)s::text IS NULL OR r.tenant = %(tenant)s)
              AND (s.submission_reason = 'deadline'
                   OR s.deadline_at - s.submission_at
                      < (s.deadline_at - s.opened_at) * {NEAR_DEADLINE_SHARE}
                   OR (s.submission_at IS NULL AND r.finished_at IS NOT NULL))
            ORDER BY s.opened_at""",
        p,
    )
    result.dead_letters = _dicts(
        conn,
        """SELECT d.run_id, d.kind, d.reason, d.source_topic, d.record_name, d.at
           FROM forensics_dead_letters d
           WHERE d.journal = %(journal)s AND d.at >= %(lo)s AND d.at < %(hi)s
             AND (%(tenant)s::text IS NULL OR EXISTS (
                 SELECT 1 FROM forensics_runs r WHERE r.journal = d.journal
                 AND r.run_id = d.run_id AND r.tenant = %(tenant)s))
           ORDER BY d.at""",
        p,
    )
    result.resubmissions = _resubmissions(conn, p)
    return result


def _resubmissions(conn: store.Conn, p: dict[str, Any]) -> list[dict[str, Any]]:
    # Three shapes: a new run for the same input (the client did not reuse its key); the same
    # turn delivered twice to the coordinator (ignored); a repeat the API absorbed by key.
    rows = _dicts(
        conn,
        """SELECT 'new_run' AS shape, r.run_id, r.resubmission_of AS original, r.accepted_at AS at,
                  r.thread_id
           FROM forensics_runs r
           WHERE r.journal = %(journal)s AND r.resubmission_of IS NOT NULL
             AND r.accepted_at >= %(lo)s AND r.accepted_at < %(hi)s
             AND (%(tenant)s::text IS NULL OR r.tenant = %(tenant)s)
           UNION ALL
           SELECT 'duplicate_delivery', e.run_id, e.run_id, e.at, r.thread_id
           FROM forensics_events e JOIN forensics_runs r USING (journal, run_id)
           WHERE e.journal = %(journal)s AND e.event_type = 'InputIgnored'
             AND e.note LIKE 'StartRun %%' AND e.at >= %(lo)s AND e.at < %(hi)s
             AND (%(tenant)s::text IS NULL OR r.tenant = %(tenant)s)""",
        p,
    )
    if _exists(conn, "api_turns"):
        rows += _dicts(
            conn,
            """SELECT 'same_key' AS shape, t.run_id, t.run_id AS original,
                      t.last_repeat_at AS at, t.thread_id
               FROM api_turns t JOIN forensics_runs r
                 ON r.journal = %(journal)s AND r.run_id = t.run_id
               WHERE t.repeats > 0 AND t.last_repeat_at >= %(lo)s AND t.last_repeat_at < %(hi)s
                 AND (%(tenant)s::text IS NULL OR t.tenant = %(tenant)s)""",
            p,
        )
    rows.sort(key=lambda r: r["at"])
    return rows

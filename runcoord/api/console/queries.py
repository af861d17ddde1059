"""What the console reads: runs from the forensics projection, scoped to a tenant (or, for an
operator, to none), with the marks a person scanning the list should not miss.

A run of another tenant and a run that does not exist read the same (None): the console must
not let one tenant probe another's run ids any more than the API does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from runcoord.forensics import scan

Conn = psycopg.Connection[tuple[Any, ...]]

# A run not finished and not moved for this long is marked stalled: the coordinator's own
# deadlines (steps, approvals, the run's) are all shorter, so something is stuck.
STALLED_AFTER = timedelta(seconds=120)
LISTED = 200


@dataclass(frozen=True)
class Filters:
    tenant: str | None = None  # None: every tenant (operators only)
    status: str | None = None
    since: datetime | None = None
    tool: str | None = None
    search: str | None = None  # a run id or a thread id


@dataclass
class RunRow:
    run_id: str
    tenant: str
    thread_id: str
    status: str
    provider: str
    steps: int
    outcome: str | None
    accepted_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    marks: list[str] = field(default_factory=list)


_WHERE = """
r.journal = %(journal)s
AND (%(tenant)s::text IS NULL OR r.tenant = %(tenant)s)
AND (%(since)s::timestamptz IS NULL OR r.accepted_at >= %(since)s)
AND (%(search)s::text IS NULL OR r.run_id = %(search)s OR r.thread_id = %(search)s)
AND (%(tool)s::text IS NULL OR EXISTS (
        SELECT 1 FROM forensics_approvals a
        WHERE a.journal = r.journal AND a.run_id = r.run_id AND a.tool = %(tool)s)
    {audit})
"""
# The projection does not index tool names; the sandbox's audit (when this database has it)
# knows which tools acted for a run, and the approvals which were held.
_BY_AUDIT = (
    "OR EXISTS (SELECT 1 FROM sandbox_audit s WHERE s.run_id = r.run_id AND s.tool = %(tool)s)"
)


def _exists(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _params(journal: str, f: Filters) -> dict[str, Any]:
    return {
        "journal": journal,
        "tenant": f.tenant,
        "since": f.since,
        "search": f.search,
        "tool": f.tool,
        "status": f.status,
    }


def list_runs(conn: Conn, journal: str, f: Filters, limit: int = LISTED) -> list[RunRow]:
    """Newest first, with their marks (stalled, dead-lettered, and the scan's anomalies)."""
    where = _WHERE.format(audit=_BY_AUDIT if _exists(conn, "sandbox_audit") else "")
    rows = conn.execute(
        "SELECT r.run_id, r.tenant, r.thread_id, r.phase, r.provider, r.steps, r.outcome, "
        "r.accepted_at, r.updated_at, r.finished_at, "
        "EXISTS (SELECT 1 FROM forensics_dead_letters d "
        "        WHERE d.journal = r.journal AND d.run_id = r.run_id) "
        f"FROM forensics_runs r WHERE {where} "
        "AND (%(status)s::text IS NULL OR r.phase = %(status)s) "
        "ORDER BY r.accepted_at DESC, r.run_id LIMIT %(limit)s",
        {**_params(journal, f), "limit": limit},
    ).fetchall()
    now = datetime.now(UTC)
    out = []
    for r in rows:
        run = RunRow(*r[:10])
        if run.finished_at is None and now - run.updated_at > STALLED_AFTER:
            run.marks.append("stalled")
        if r[10]:
            run.marks.append("dead-lettered")
        out.append(run)
    _mark_anomalies(conn, journal, f.tenant, out, now)
    return out


def _mark_anomalies(
    conn: Conn, journal: str, tenant: str | None, listed: list[RunRow], now: datetime
) -> None:
    """Mark the listed runs the forensics scan finds something about, over their time span."""
    if not listed:
        return
    start = min(r.accepted_at for r in listed)
    found = scan.scan(conn, journal, start, now + timedelta(minutes=1), tenant)
    why: dict[str, set[str]] = {}
    for row in found.unknown_outcomes:
        why.setdefault(row["run_id"], set()).add("unknown outcome")
    for row in found.near_deadline:
        why.setdefault(row["run_id"], set()).add("near deadline")
    for row in found.resubmissions:
        why.setdefault(row["run_id"], set()).add("resubmitted")
    for cluster in found.clusters:
        for action in cluster.actions:
            if action.run_id:
                why.setdefault(action.run_id, set()).add("duplicate action")
    for run in listed:
        run.marks.extend(f"anomalous: {w}" for w in sorted(why.get(run.run_id, ())))


def counts(conn: Conn, journal: str, f: Filters) -> dict[str, int]:
    """Runs by status under the filters (the status filter aside)."""
    where = _WHERE.format(audit=_BY_AUDIT if _exists(conn, "sandbox_audit") else "")
    rows = conn.execute(
        f"SELECT r.phase, count(*) FROM forensics_runs r WHERE {where} "
        "GROUP BY r.phase ORDER BY r.phase",
        _params(journal, f),
    ).fetchall()
    return {str(phase): int(n) for phase, n in rows}


@dataclass(frozen=True)
class RunHead:
    """A run as the console's page shows it before its story: from the projection, or from
    the API's turn when it is not projected (yet)."""

    run_id: str
    tenant: str
    thread_id: str
    status: str
    outcome: str | None
    accepted_at: datetime | None
    finished_at: datetime | None
    projected: bool

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def find_run(conn: Conn, journal: str, run_id: str, tenant: str | None) -> RunHead | None:
    """The run when ``tenant`` (None: any) may see it; None for a missing one and for another
    tenant's alike."""
    row = conn.execute(
        "SELECT run_id, tenant, thread_id, phase, outcome, accepted_at, finished_at "
        "FROM forensics_runs WHERE journal = %s AND run_id = %s "
        "AND (%s::text IS NULL OR tenant = %s)",
        (journal, run_id, tenant, tenant),
    ).fetchone()
    if row is not None:
        run_id, tenant_, thread_id, phase, outcome, accepted_at, finished_at = row
        return RunHead(
            run_id, tenant_, thread_id, phase, outcome, accepted_at, finished_at, projected=True
        )
    turn = conn.execute(
        "SELECT run_id, tenant, thread_id, created_at FROM api_turns "
        "WHERE run_id = %s AND (%s::text IS NULL OR tenant = %s)",
        (run_id, tenant, tenant),
    ).fetchone()
    if turn is None:
        return None
    return RunHead(turn[0], turn[1], turn[2], "pending", None, turn[3], None, projected=False)


def version(conn: Conn, journal: str, run_id: str) -> tuple[Any, ...]:
    """Changes whenever the run's story would: its journal, its intents, its approvals."""
    row = conn.execute(
        "SELECT (SELECT last_seq FROM forensics_runs WHERE journal = %(j)s AND run_id = %(r)s), "
        "(SELECT count(*) FROM forensics_intents WHERE journal = %(j)s AND run_id = %(r)s), "
        "(SELECT string_agg(status, ',' ORDER BY approval_id) FROM forensics_approvals "
        " WHERE journal = %(j)s AND run_id = %(r)s), "
        "(SELECT finished_at IS NOT NULL FROM forensics_runs "
        " WHERE journal = %(j)s AND run_id = %(r)s)",
        {"j": journal, "r": run_id},
    ).fetchone()
    return tuple(row or ())

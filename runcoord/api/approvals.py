"""Approval requests for the agent API: read from the forensics projection (what the
coordinator journaled), decided through ``api_approval_decisions`` and the outbox.

A decision is taken once at the API, whoever races: its row is inserted with ``ON CONFLICT DO
NOTHING`` in ONE transaction with the outbox row carrying its ApprovalDecision to runs.inbox,
so either both exist or neither, and the loser of a race finds the winner's row (the insert
waits for the winner to commit). The decision carries the arguments hash and rules version of
the projected request, what the approver saw: the coordinator refuses it if the call or the
rules changed since. The coordinator stays the judge of what counts (a decision that arrives
after the deadline is too late); the projection shows its verdict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg

from runcoord.api.keys import Key
from runcoord.api.turns import enqueue
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.domain import events as ev
from runcoord.domain.ids import payload_hash
from runcoord.domain.inputs import ApprovalDecision
from runcoord.errors import RuncoordError
from runcoord.forensics.reader import PositionReader

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

DECISIONS = ("approve", "reject")
STATUSES = ("pending", "approve", "reject", "expired")

_COLUMNS = (
    "a.approval_id, a.run_id, a.step_id, a.tool_call_id, a.tool, a.arguments_hash, "
    "a.policy_version, a.request_seq, a.deadline_at, a.requested_at, a.status, a.reason, "
    "a.approver, a.decided_at, r.finished_at IS NOT NULL"
)


@dataclass(frozen=True)
class Request:
    """An approval request as projected, with its decision once the coordinator made one."""

    approval_id: str
    run_id: str
    step_id: str
    tool_call_id: str
    tool: str
    arguments_hash: str
    policy_version: str
    request_seq: int
    deadline_at: datetime
    requested_at: datetime
    status: str  # pending | approve | reject | expired
    reason: str | None
    approver: str | None
    decided_at: datetime | None
    run_finished: bool

    @property
    def awaiting(self) -> bool:
        """Still waiting for a person: pending, and its run not over."""
        return self.status == "pending" and not self.run_finished

    @property
    def recorded(self) -> Recorded | None:
        """The coordinator's decision, if it made one."""
        if self.status == "pending":
            return None
        return Recorded(self.status, self.reason or "", self.approver or "", self.decided_at)


@dataclass(frozen=True)
class Recorded:
    decision: str  # approve | reject, or expired (the coordinator's, when nobody decided)
    reason: str
    approver: str
    decided_at: datetime | None

    def same_verdict(self, other: Recorded) -> bool:
        """The same decision by the same approver (the reason aside)."""
        return (self.decision, self.approver) == (other.decision, other.approver)

    def same(self, other: Recorded) -> bool:
        """The same person's same decision: a repeat, not a second decision."""
        return (self.decision, self.approver, self.reason) == (
            other.decision,
            other.approver,
            other.reason,
        )


@dataclass(frozen=True)
class Decided:
    """What became of a POSTed decision:

    - ``accepted``: recorded now, on its way to the coordinator;
    - ``replayed``: the same decision was recorded before (any Idempotency-Key);
    - ``conflict``: another decision was recorded first (``recorded`` says which: another
      approver's, or the coordinator's ``expired``), or the run is over (``recorded`` None);
    - ``key_reused``: the Idempotency-Key was used for a decision on another approval.
    """

    outcome: Literal["accepted", "replayed", "conflict", "key_reused"]
    recorded: Recorded | None


def _request(row: tuple[Any, ...]) -> Request:
    fields = [*row[:14], bool(row[14])]
    return Request(*fields)


def get(conn: Conn, journal: str, tenant: str, approval_id: str) -> Request | None:
    """The tenant's approval request; None when it is not projected (yet), or another
    tenant's: the same answer, so one tenant cannot probe another's ids."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM forensics_approvals a LEFT JOIN forensics_runs r "
        "ON r.journal = a.journal AND r.run_id = a.run_id "
        "WHERE a.journal = %s AND a.approval_id = %s AND a.tenant = %s",
        (journal, approval_id, tenant),
    ).fetchone()
    return None if row is None else _request(row)


def listed(conn: Conn, journal: str, tenant: str, status: str, limit: int) -> list[Request]:
    """The tenant's approvals in ``status``, newest request first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM forensics_approvals a LEFT JOIN forensics_runs r "
        "ON r.journal = a.journal AND r.run_id = a.run_id "
        "WHERE a.journal = %s AND a.tenant = %s AND a.status = %s "
        "ORDER BY a.requested_at DESC, a.approval_id LIMIT %s",
        (journal, tenant, status, limit),
    ).fetchall()
    return [_request(r) for r in rows]


def for_run(conn: Conn, journal: str, run_id: str) -> list[Request]:
    """A run's approval requests, oldest first (the caller checked the run is visible)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM forensics_approvals a LEFT JOIN forensics_runs r "
        "ON r.journal = a.journal AND r.run_id = a.run_id "
        "WHERE a.journal = %s AND a.run_id = %s ORDER BY a.requested_at, a.approval_id",
        (journal, run_id),
    ).fetchall()
    return [_request(r) for r in rows]


def decide(
    conn: Conn,
    request: Request,
    key: Key,
    decision: str,
    reason: str,
    idempotency_key: str,
    inbox: str,
    codec: AvroCodec,
) -> Decided:
    """Record ``key``'s decision on ``request`` and send it, unless a decision is recorded
    already; see Decided for the outcomes."""
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r}: one of {', '.join(DECISIONS)}")
    mine = Recorded(decision, reason, key.approver, None)
    with conn.transaction():
        if request.awaiting:
            now_ms = int(time.time() * 1000)
            # A concurrent POST on this approval waits here for the first to commit, then
            # inserts nothing and reads the winner's row below.
            inserted = conn.execute(
                "INSERT INTO api_approval_decisions (approval_id, tenant, run_id, decision, "
                "reason, approver, key_id, idempotency_key, arguments_hash, policy_version, "
                "decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING decided_at",
                (
                    request.approval_id,
                    key.tenant,
                    request.run_id,
                    decision,
                    reason,
                    key.approver,
                    key.key_id,
                    idempotency_key,
                    request.arguments_hash,
                    request.policy_version,
                    datetime.fromtimestamp(now_ms / 1000, UTC),
                ),
            ).fetchone()
            if inserted is not None:
                message = ApprovalDecision(
                    run_id=request.run_id,
                    tenant=key.tenant,
                    approval_id=request.approval_id,
                    decision=decision,
                    reason=reason,
                    approver=key.approver,
                    arguments_hash=request.arguments_hash,
                    policy_version=request.policy_version,
                    decided_at_ms=now_ms,
                )
                # Raising rolls the row back too: no decision without its way to the run.
                enqueue(conn, inbox, request.run_id, message, codec)
                return Decided("accepted", Recorded(decision, reason, key.approver, inserted[0]))
        row = conn.execute(
            "SELECT decision, reason, approver, decided_at FROM api_approval_decisions "
            "WHERE approval_id = %s",
            (request.approval_id,),
        ).fetchone()
    ours = None if row is None else Recorded(*row)
    return verdict(mine, ours, request.recorded, awaiting=request.awaiting)


def verdict(
    mine: Recorded, ours: Recorded | None, theirs: Recorded | None, *, awaiting: bool
) -> Decided:
    """What a decision that was not recorded gets: ``ours`` is the decision this API recorded
    for the approval, ``theirs`` the coordinator's as projected, ``awaiting`` whether the
    approval was still waiting for a person (see Request.awaiting)."""
    if theirs is not None and (ours is None or not theirs.same_verdict(ours)):
        # Decided by the coordinator (expired, perhaps before ours reached it), or otherwise
        # than through this API: that is what stands, whatever was recorded here.
        return Decided("replayed" if theirs.same(mine) else "conflict", theirs)
    if ours is not None:
        return Decided("replayed" if ours.same(mine) else "conflict", ours)
    if awaiting:
        return Decided("key_reused", None)  # the insert met (tenant, idempotency_key)
    return Decided("conflict", None)  # the run finished with the approval undecided


def arguments(
    conn: Conn, bootstrap: str, journal: str, request: Request, codec: AvroCodec
) -> str | None:
    """The call's arguments as the model sent them (JSON text), from the step's StepOpened in
    the journal: the last one before the request. None when it cannot be read, or does not
    hash to what the request says (an approver must never be shown other arguments)."""
    at = conn.execute(
        "SELECT kafka_partition, kafka_offset FROM forensics_events "
        "WHERE journal = %s AND run_id = %s AND seq < %s AND event_type = 'StepOpened' "
        "ORDER BY seq DESC LIMIT 1",
        (journal, request.run_id, request.request_seq),
    ).fetchone()
    if at is None:
        return None
    partition, offset = int(at[0]), int(at[1])
    try:
        with PositionReader(bootstrap) as reader:
            found = reader.fetch({(journal, partition): [offset]}, timeout=5.0)
        record = found.get((journal, partition, offset))
        if record is None or not record.value:
            return None
        event = from_record(*codec.decode(record.value))
    except RuncoordError as exc:
        # The request is still worth showing (with its arguments hash) while Kafka is away.
        log.warning("approval %s: arguments not read: %s", request.approval_id, exc)
        return None
    if not isinstance(event, ev.StepOpened) or event.step_id != request.step_id:
        return None
    call = next((c for c in event.calls if c.id == request.tool_call_id), None)
    if call is None or payload_hash(call.arguments) != request.arguments_hash:
        return None
    return call.arguments

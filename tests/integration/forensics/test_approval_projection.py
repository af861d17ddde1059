"""Approvals in the projection: a request projected once with its run's tenant, its decision
moving only a pending row, whatever is redelivered or however the batches fall."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from runcoord.db import migrate
from runcoord.domain import events as ev
from runcoord.domain.model import Approval, ToolCall
from runcoord.forensics.projector import Projector, ProjectorConfig, _Batch
from runcoord.kafka import TopicNames

pytestmark = pytest.mark.integration


def journal(run_id: str) -> list[ev.JournalEvent]:
    approval = Approval(
        approval_id=f"apr_{run_id}",
        tool_call_id="c1",
        tool="charge_card",
        arguments_hash="h1",
        policy_version="v1",
        deadline_ms=60_000,
        requested_at_ms=2_000,
    )
    return [
        ev.RunAccepted(
            run_id=run_id, seq=1, at_ms=1_000, tenant="t-apr", thread_id="th",
            assistant_id="a", provider="assistants", input="hi", run_deadline_ms=600_000,
            create_key="ek1_c",
        ),
        ev.StepOpened(
            run_id=run_id, seq=2, at_ms=2_000, step_id="s1",
            calls=(ToolCall("c1", "charge_card", '{"amount_cents": 25000}'),),
            deadline_ms=80_000, expires_at_ms=None,
        ),
        ev.ApprovalRequested(
            run_id=run_id, seq=3, at_ms=2_000, step_id="s1", approval=approval,
            step_deadline_ms=80_000, run_deadline_ms=600_000,
        ),
        ev.ApprovalDecided(
            run_id=run_id, seq=4, at_ms=3_000, step_id="s1", approval_id=approval.approval_id,
            decision="reject", reason="too much", approver="alice", decided_at_ms=2_900,
        ),
    ]  # fmt: skip


def batch(events: list[ev.JournalEvent]) -> _Batch:
    return _Batch(events=[(e, 0, e.seq) for e in events])


def rows(dsn: str, journal_topic: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT approval_id, run_id, tenant, step_id, tool_call_id, tool, arguments_hash, "
            "policy_version, request_seq, status, reason, approver, "
            "extract(epoch FROM deadline_at) * 1000, extract(epoch FROM decided_at) * 1000 "
            "FROM forensics_approvals WHERE journal = %s ORDER BY approval_id",
            (journal_topic,),
        ).fetchall()


def test_requests_and_decisions_are_projected_once_first_decision_kept(pg_dsn: str) -> None:
    migrate(pg_dsn)
    topics = TopicNames.with_prefix(f"t{uuid.uuid4().hex[:10]}.")
    projector = Projector(ProjectorConfig("unused:9092", pg_dsn, topics))
    split, together = journal("r-split"), journal("r-together")
    with psycopg.connect(pg_dsn) as conn:
        # The request in one batch, its decision in the next; the other run's all in one.
        projector.apply(conn, batch(split[:3]))
        (pending,) = rows(pg_dsn, topics.events)
        assert pending[9:12] == ("pending", None, None)
        projector.apply(conn, batch(split[3:] + together))
        first = rows(pg_dsn, topics.events)
        # Everything again, and each record twice in one batch, in reverse.
        projector.apply(conn, batch(split + together))
        projector.apply(conn, batch((split + together) * 2 + (split + together)[::-1]))
        assert rows(pg_dsn, topics.events) == first
        # A second decision for an approval (never journaled by the domain): the first stays.
        other = ev.ApprovalDecided(
            run_id="r-split", seq=5, at_ms=4_000, step_id="s1", approval_id="apr_r-split",
            decision="approve", reason="", approver="bob", decided_at_ms=3_900,
        )  # fmt: skip
        projector.apply(conn, batch([other]))
        assert rows(pg_dsn, topics.events) == first

    assert [r[:12] for r in first] == [
        ("apr_r-split", "r-split", "t-apr", "s1", "c1", "charge_card", "h1", "v1", 3,
         "reject", "too much", "alice"),
        ("apr_r-together", "r-together", "t-apr", "s1", "c1", "charge_card", "h1", "v1", 3,
         "reject", "too much", "alice"),
    ]  # fmt: skip
    assert {(float(r[12]), float(r[13])) for r in first} == {(60_000.0, 2_900.0)}

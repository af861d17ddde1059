"""`forensics scan` on a forced duplicate-like cluster: every repeat gets its cause."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from runcoord.codec import AvroCodec
from runcoord.db import migrate
from runcoord.domain.model import ToolCall
from runcoord.forensics.scan import scan
from runcoord.forensics.synthetic import RunSpec, encode, run_messages
from runcoord.kafka import TopicNames
from tests.integration.forensics.journal import produce
from tests.integration.forensics.projection import projector, wait_rows

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant(pg_dsn: str, unique: str) -> Iterator[str]:
    """A tenant of this test's own: its clusters cannot mix with anyone else's."""
    name = f"tscan{unique}"
    migrate(pg_dsn)
    yield name
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DELETE FROM sandbox_audit WHERE tenant = %s", (name,))


def test_scan_attributes_each_repeat_of_a_forced_cluster(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tenant: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at = int(now.timestamp() * 1000)
    call = ToolCall("c1", "create_ticket", '{"subject": "refund"}')
    runs = [
        RunSpec("r1", tenant, "thread-a", "refund my order", (call,), at),
        # The client sent the same turn again, as a new run, 40 s later.
        RunSpec("r2", tenant, "thread-a", "refund my order", (call,), at + 40_000),
        RunSpec("r3", tenant, "thread-b", "another customer", (call,), at + 50_000),
    ]
    codec = AvroCodec()
    produce(bootstrap, [e for r in runs for e in encode(run_messages(r), topics, codec, 6)])
    audit = [
        ("r1", "c1", "k1", 0),
        ("r1", "c1", "k1", 3),  # the same tool call acted twice: our side's duplicate
        ("r2", "c1", "k2", 41),
        ("r3", "c1", "k3", 52),
    ]
    with psycopg.connect(pg_dsn) as conn:
        for run_id, call_id, key, seconds in audit:
            conn.execute(
                "INSERT INTO sandbox_audit (tool, tenant, run_id, tool_call_id, payload_hash, "
                "idempotency_key, fencing_token, acted_at) VALUES "
                "('create_ticket', %s, %s, %s, 'ph-refund', %s, 1, %s)",
                (tenant, run_id, call_id, key, now + timedelta(seconds=seconds)),
            )
    with projector(bootstrap, pg_dsn, topics, f"{topics.events}-projector"):
        wait_rows(
            pg_dsn,
            "SELECT count(*) FROM forensics_runs WHERE journal = %s AND finished_at IS NOT NULL",
            (topics.events,),
            lambda n: n == 3,
        )
    start, end = now - timedelta(minutes=1), now + timedelta(minutes=2)
    with psycopg.connect(pg_dsn) as conn:
        result = scan(conn, topics.events, start, end, tenant)
    [cluster] = result.clusters
    assert [a.run_id for a in cluster.actions] == ["r1", "r1", "r2", "r3"]
    assert cluster.causes == ["system_duplicate", "client_resubmission", "legitimate_repeat"]
    assert cluster.cause == "system_duplicate"
    assert [(r["shape"], r["run_id"], r["original"]) for r in result.resubmissions] == [
        ("new_run", "r2", "r1")
    ]

    done = subprocess.run(
        [sys.executable, "-m", "runcoord.cli", "forensics", "scan", "--json",
         "--topic-prefix", topics.inbox.removesuffix("runs.inbox"), "--tenant", tenant,
         "--from", start.isoformat(), "--to", end.isoformat()],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = json.loads(done.stdout)
    assert out["counts"]["duplicate_clusters"] == 1
    assert out["clusters"][0]["cause"] == "system_duplicate"
    assert out["counts"]["client_resubmissions"] == 1

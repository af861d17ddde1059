"""POST a turn: one run per Idempotency-Key, and the relay publishes exactly the outbox."""

from __future__ import annotations

import psycopg
import pytest

from runcoord.api.relay import RelayConfig, relaying
from runcoord.domain.inputs import StartRun
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from tests.integration.api.world import api, inbox_records

pytestmark = pytest.mark.integration


def unsent(dsn: str, topic: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM api_outbox WHERE topic = %s AND sent_at IS NULL", (topic,)
        ).fetchone()
    n = int(row[0]) if row else 0
    return None if n == 0 else f"{n} rows unsent"


def test_a_retried_post_gets_the_same_run_and_the_relay_sends_each_row_once(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    with api(pg_dsn, bootstrap, topics) as w:
        first = w.post_turn(w.key_a, f"th-{unique}", "spinner-1")
        again = w.post_turn(w.key_a, f"th-{unique}", "spinner-1")  # the client's retry
        other = w.post_turn(w.key_a, f"th-{unique}", "spinner-2", "and a second question")
        reused = w.post_turn(w.key_a, f"th-{unique}", "spinner-1", "a different turn")
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["run_id"] == first.json()["run_id"] != other.json()["run_id"]
    assert (first.json()["replayed"], again.json()["replayed"]) == (False, True)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert reused.status_code == 409

    runs = {first.json()["run_id"], other.json()["run_id"]}
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT record_key, record_name FROM api_outbox WHERE topic = %s", (topics.inbox,)
        ).fetchall()
        repeats = conn.execute(
            "SELECT repeats FROM api_turns WHERE run_id = %s", (first.json()["run_id"],)
        ).fetchone()
    assert sorted((bytes(k).decode(), n) for k, n in rows) == sorted((r, "StartRun") for r in runs)
    assert repeats == (1,)  # the absorbed retry, for forensics

    config = RelayConfig(bootstrap, pg_dsn, [topics.inbox])
    with relaying(config):
        wait_until(lambda: unsent(pg_dsn, topics.inbox), timeout=30, what="the outbox sent")
    with relaying(config) as second:  # a relay restart finds nothing left to send
        wait_until(lambda: unsent(pg_dsn, topics.inbox), timeout=30, what="nothing to send")
    assert second.stats.sent == 0

    records = inbox_records(bootstrap, topics.inbox)
    assert sorted(k.decode() for k, _ in records) == sorted(runs)
    starts = [m for _, m in records]
    assert all(isinstance(m, StartRun) for m in starts)
    assert {m.thread_id for m in starts} == {f"th-{unique}"}
    assert {m.input for m in starts} == {"refund please", "and a second question"}

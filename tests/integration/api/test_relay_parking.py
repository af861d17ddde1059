"""A row Kafka will never take is parked and dead-lettered; the relay goes on with the rest
(finding 4: one oversize StartRun used to stop the relay, for every tenant, for good)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runcoord.api.relay import RelayConfig, relaying
from runcoord.api.turns import enqueue
from runcoord.codec import AvroCodec
from runcoord.deadletter import DeadLetter
from runcoord.domain.inputs import StartRun
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from tests.conftest import NewTopicFactory
from tests.integration.api.world import config, inbox_records, key_id, serving
from tests.integration.processes import Proc, running

pytestmark = pytest.mark.integration


def sneak_in(dsn: str, tenant: str, thread: str, inbox: str, text: str) -> str:
    """A turn as an API without the size check would have accepted it: turn row + outbox row."""
    run_id = f"run_{uuid.uuid4().hex}"
    start = StartRun(run_id, tenant, thread, "asst_default", "assistants", text,
                     int(time.time() * 1000), {})  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO api_threads (thread_id, tenant) VALUES (%s, %s)", (thread, tenant)
        )
        conn.execute(
            "INSERT INTO api_turns (tenant, idempotency_key, run_id, thread_id, request_hash, "
            "assistant_id, provider, input, inbox) VALUES (%s, %s, %s, %s, 'x', 'asst_default', "
            "'assistants', 'huge', %s)",
            (tenant, f"sneak-{run_id}", run_id, thread, inbox),
        )
        enqueue(conn, inbox, run_id, start, AvroCodec())
    return run_id


def outbox_row(dsn: str, run_id: str) -> dict[str, Any]:
    """The run's StartRun row (sent_at, failed_at, failure, …), as JSON."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT to_jsonb(o) FROM api_outbox o WHERE record_key = %s", (run_id.encode(),)
        ).fetchone()
    assert row is not None
    return dict(row[0])


def test_an_oversize_start_run_is_parked_dead_lettered_and_the_relay_goes_on(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path, unique: str
) -> None:
    prefix = topics.inbox.removesuffix("runs.inbox")
    relay = Proc("relay", ["api", "relay", "--topic-prefix", prefix], tmp_path / "relay.log")
    with serving(config(pg_dsn, bootstrap, topics)) as s:
        with psycopg.connect(pg_dsn) as conn:
            found = conn.execute(
                "SELECT tenant FROM api_keys WHERE key_id = %s", (key_id(s.key_a),)
            ).fetchone()
        assert found is not None
        # Over librdkafka's message.max.bytes (1,000,000): produce() refuses it outright.
        huge = sneak_in(pg_dsn, found[0], f"th-big-{unique}", topics.inbox, "x" * 1_100_000)
        with running(relay):
            later = s.post_turn(s.key_a, f"th-{unique}", f"after-{unique}")
            assert later.status_code == 202, later.text
            after = later.json()["run_id"]

            def delivered() -> str | None:
                if not relay.alive():
                    raise AssertionError(f"the relay died:\n{relay.tail()}")
                return None if outbox_row(pg_dsn, after)["sent_at"] else "not sent yet"

            wait_until(delivered, timeout=60, what="the later turn sent")
            assert relay.alive(), relay.tail()
        parked = outbox_row(pg_dsn, huge)
        assert parked["sent_at"] is None and parked.get("failed_at"), parked
        assert "MSG_SIZE_TOO_LARGE" in parked["failure"], parked

        # The run says why it will never start, instead of `pending` for ever.
        run = s.http.get(f"/v1/runs/{huge}", headers=s.auth(s.key_a))
        assert run.status_code == 200, run.text
        assert run.json()["status"] == "failed"
        assert "MSG_SIZE_TOO_LARGE" in (run.json()["outcome"] or "")
        assert run.json()["finished_at"] is not None

    letters = [m for _, m in inbox_records(bootstrap, topics.dlq)]
    assert len(letters) == 1 and isinstance(letters[0], DeadLetter)
    letter = letters[0]
    assert (letter.key, letter.record_name, letter.source_topic) == (huge, "StartRun", topics.inbox)
    assert "MSG_SIZE_TOO_LARGE" in letter.reason
    assert [k.decode() for k, _ in inbox_records(bootstrap, topics.inbox)] == [after]


def test_a_record_the_broker_refuses_is_parked_too(
    bootstrap: str, pg_dsn: str, topics: TopicNames, new_topic: NewTopicFactory, unique: str
) -> None:
    """Under the producer's limit but over the topic's: the broker's refusal, in the delivery
    report, parks the row the same way; a retriable problem never would."""
    small = new_topic(1, config={"max.message.bytes": "4096"}, name="small")
    with serving(config(pg_dsn, bootstrap, topics)):  # migrated, keys made
        pass
    big = sneak_in(pg_dsn, f"tr-{unique}", f"th-big-{unique}", small, "x" * 20_000)
    fine = sneak_in(pg_dsn, f"tr-{unique}", f"th-fine-{unique}", small, "hi")
    with relaying(RelayConfig(bootstrap, pg_dsn, [small], dlq=topics.dlq)) as relay:
        wait_until(
            lambda: None if outbox_row(pg_dsn, fine)["sent_at"] else "not sent",
            timeout=60,
            what="the fine row sent",
        )
        wait_until(
            lambda: None if outbox_row(pg_dsn, big).get("failed_at") else str(relay.stats),
            timeout=30,
            what="the big row parked",
        )
    assert (relay.stats.sent, relay.stats.parked) == (1, 1), relay.stats
    parked = outbox_row(pg_dsn, big)
    assert parked["sent_at"] is None and "MSG_SIZE_TOO_LARGE" in parked["failure"], parked
    letters = [m for _, m in inbox_records(bootstrap, topics.dlq)]
    assert [(m.key, m.source_topic) for m in letters] == [(big, small)]

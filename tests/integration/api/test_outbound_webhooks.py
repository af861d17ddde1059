"""Outbound webhooks on the real stack: registered through the API, recorded from a test
journal by `runcoord api deliver` (a real process, killed -9 on purpose), and received by a
local HTTP receiver that checks every signature with the openai SDK."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from fastapi.testclient import TestClient
from openai import OpenAI

from runcoord.api import hooks
from runcoord.api.app import create_app
from runcoord.api.deliver import Batch, DeliverConfig, DeliverStats, Recorder
from runcoord.api.keys import create as create_key
from runcoord.codec import AvroCodec
from runcoord.db import migrate
from runcoord.domain import events as ev
from runcoord.domain.model import Approval
from runcoord.forensics.synthetic import encode
from runcoord.kafka import TopicNames, consumer_config
from runcoord.stack.polling import wait_until
from tests.integration.api.world import config
from tests.integration.forensics.journal import produce
from tests.integration.processes import Proc, free_port

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- a receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A local HTTP endpoint that answers ``script``'s statuses in turn (then 200)."""

    port: int
    script: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.got)


@contextmanager
def receiving(script: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(free_port(), list(script or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                status = receiver.script.pop(0) if receiver.script else 200
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.got.append(Received(headers, body, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def verified(secret: str, got: Received) -> dict[str, Any]:
    """The event, once the openai SDK has verified its signature with the hook's secret."""
    client = OpenAI(api_key="unused", base_url="http://127.0.0.1:9", webhook_secret=secret)
    try:
        client.webhooks.unwrap(got.body, got.headers)
    finally:
        client.close()
    event: dict[str, Any] = json.loads(got.body)
    return event


# --------------------------------------------------------------------------- the API, a journal


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]  # tenant -> key

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def register(self, tenant: str, url: str, events: list[str]) -> dict[str, Any]:
        r = self.client.post(
            "/v1/webhooks", json={"url": url, "events": events}, headers=self.auth(tenant)
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body


@contextmanager
def api(
    dsn: str, bootstrap: str, topics: TopicNames, *tenants: str, allow_private: bool = True
) -> Iterator[Api]:
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        keys = {t: create_key(conn, t) for t in tenants}
    settings = config(dsn, bootstrap, topics, webhooks_allow_private=allow_private)
    with TestClient(create_app(settings)) as client:
        yield Api(client, keys)


def accepted(run_id: str, tenant: str, at_ms: int) -> ev.RunAccepted:
    return ev.RunAccepted(run_id=run_id, seq=1, at_ms=at_ms, tenant=tenant, thread_id="th",
                          assistant_id="asst", provider="assistants", input="hi",
                          run_deadline_ms=at_ms + 600_000, create_key=f"ck-{run_id}")  # fmt: skip


def finished(run_id: str, seq: int, at_ms: int, status: str = "completed") -> ev.RunFinished:
    return ev.RunFinished(run_id=run_id, seq=seq, at_ms=at_ms, status=status, reason=None)


def journal(bootstrap: str, topics: TopicNames, *events: ev.JournalEvent) -> None:
    """The events on the test's runs.events, Avro-encoded as the coordinator writes them."""
    consumer = Consumer(consumer_config(bootstrap, f"meta-{uuid.uuid4().hex[:8]}"))
    try:
        partitions = len(consumer.list_topics(topics.events, timeout=10).topics[topics.events]
                         .partitions)  # fmt: skip
    finally:
        consumer.close()
    produce(bootstrap, list(encode(list(events), topics, AvroCodec(), partitions)))


def caught_up(bootstrap: str, group: str, topic: str) -> str | None:
    """None once ``group`` has committed offsets at the end of every partition of ``topic``."""
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        for tp in consumer.committed(parts, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return f"{topic}[{tp.partition}] committed {tp.offset} of {high}"
    finally:
        consumer.close()
    return None


def recorder_blocked(dsn: str) -> str | None:
    """None once a session waits for a lock in the recorder's insert of delivery rows."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s",
            ("%INSERT INTO api_hook_deliveries%",),
        ).fetchone()
    return None if row and row[0] else "not waiting"


def rewind(bootstrap: str, group: str, topic: str) -> str | None:
    """Commit offset 0 for every partition of ``topic`` in ``group`` (which has no members)."""
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.commit(offsets=parts, asynchronous=False)
    except KafkaException as exc:
        return str(exc)
    finally:
        consumer.close()
    return None


def deliverer(tmp_path: Path, topics: TopicNames, group: str, **env: str) -> Proc:
    prefix = topics.events.removesuffix("runs.events")
    args = ["api", "deliver", "--topic-prefix", prefix, "--group", group, "--concurrency", "4",
            "--timeout-s", "5", "--webhooks-allow-private"]  # fmt: skip
    return Proc("deliver", args, tmp_path / "deliver.log", env=env)


def deliveries(dsn: str, hook_id: str) -> list[tuple[Any, ...]]:
    """(event_id, event_type, state, attempts, last_status, last_error) of the hook's rows."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event_id, event_type, state, attempts, last_status, last_error "
            "FROM api_hook_deliveries WHERE hook_id = %s ORDER BY id",
            (hook_id,),
        ).fetchall()


def row_is(dsn: str, hook_id: str, index: slice | int, want: Any) -> str | None:
    """None once the hook's first delivery row has ``want`` at ``index``."""
    rows = deliveries(dsn, hook_id)
    if not rows:
        return "no delivery row yet"
    return None if rows[0][index] == want else f"row is {rows[0]}"


def wait(check: Any, what: str, proc: Proc | None = None, timeout: float = 60) -> None:
    def checked() -> str | None:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")
        result: str | None = check()
        return result

    wait_until(checked, timeout=timeout, what=what)


# --------------------------------------------------------------------------- the tests


def test_registration_checks_the_url_and_keeps_hooks_per_tenant(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    a, b = f"ta-{unique}", f"tb-{unique}"
    with api(pg_dsn, bootstrap, topics, a, b, allow_private=False) as w:
        refused = w.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/in",
                                "events": ["run.finished"]}, headers=w.auth(a))  # fmt: skip
        assert refused.status_code == 422
        assert refused.json()["detail"] == "url refused: 127.0.0.1 is loopback"
        metadata = w.client.post("/v1/webhooks", json={"url": "http://169.254.169.254/latest",
                                 "events": ["run.finished"]}, headers=w.auth(a))  # fmt: skip
        assert "cloud metadata" in metadata.json()["detail"]
        scheme = w.client.post("/v1/webhooks", json={"url": "ftp://8.8.8.8/",
                               "events": ["run.finished"]}, headers=w.auth(a))  # fmt: skip
        assert scheme.status_code == 422 and "only http and https" in scheme.json()["detail"]
        unknown = w.client.post("/v1/webhooks", json={"url": "https://8.8.8.8/",
                                "events": ["run.started"]}, headers=w.auth(a))  # fmt: skip
        assert unknown.status_code == 422
        assert w.client.get("/v1/webhooks").status_code == 401

        created = w.register(a, "https://8.8.8.8/in", ["run.finished", "approval.requested"])
        assert created["id"].startswith("hook_") and created["secret"].startswith("whsec_")
        assert created["url"] == "https://8.8.8.8/in"
        assert created["events"] == ["run.finished", "approval.requested"]
        listed = w.client.get("/v1/webhooks", headers=w.auth(a)).json()
        assert [h["id"] for h in listed] == [created["id"]]
        assert "secret" not in listed[0]
        assert w.client.get("/v1/webhooks", headers=w.auth(b)).json() == []
        path = f"/v1/webhooks/{created['id']}"
        assert w.client.delete(path, headers=w.auth(b)).status_code == 404  # not b's
        assert w.client.delete(path, headers=w.auth(a)).status_code == 204
        assert w.client.delete(path, headers=w.auth(a)).status_code == 404
        assert w.client.get("/v1/webhooks", headers=w.auth(a)).json() == []

    with api(pg_dsn, bootstrap, topics, a, allow_private=True) as w:
        assert w.register(a, "http://127.0.0.1:9/in", ["run.finished"])["id"]
        metadata = w.client.post("/v1/webhooks", json={"url": "http://169.254.169.254/",
                                 "events": ["run.finished"]}, headers=w.auth(a))  # fmt: skip
        assert metadata.status_code == 422  # even so


@pytest.mark.fault
def test_a_run_finished_is_delivered_once_across_a_kill_and_a_journal_read_again(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str, tmp_path: Path
) -> None:
    tenant, run_id, group = f"t-{unique}", f"run-{unique}", f"deliver-{unique}"
    with receiving() as receiver, api(pg_dsn, bootstrap, topics, tenant) as w:
        # localhost: resolved by the deliverer, which connects to the address it checked and
        # still says Host: localhost:<port>.
        hook = w.register(tenant, receiver.url("localhost"), ["run.finished"])
        now = int(time.time() * 1000)
        journal(bootstrap, topics, accepted(run_id, tenant, now), finished(run_id, 2, now + 5))

        # 1. The recorder stuck inside its transaction (the test holds the table): its offsets
        # have not moved before its rows are written. Killed -9 there.
        with psycopg.connect(pg_dsn) as lock:
            lock.execute("LOCK TABLE api_hook_deliveries IN SHARE MODE")
            first = deliverer(tmp_path, topics, group).start()
            try:
                wait(lambda: recorder_blocked(pg_dsn), "the recorder inside its insert", first)
                assert caught_up(bootstrap, group, topics.events) is not None
            finally:
                first.kill9()
            lock.rollback()
        assert deliveries(pg_dsn, hook["id"]) == []

        # 2. Restarted: the records are read again, recorded and delivered.
        second = deliverer(tmp_path, topics, group).start()
        try:
            wait(lambda: None if receiver.requests() else "nothing received", "delivery", second)
            wait(lambda: row_is(pg_dsn, hook["id"], 2, "delivered"), "the row delivered", second)
            wait(lambda: caught_up(bootstrap, group, topics.events), "offsets", second)
        finally:
            second.stop()

        # 3. The group's offsets rewound, as after a crash between the rows' commit and the
        # offsets': the records are recorded again, and nobody is told twice.
        wait_until(lambda: rewind(bootstrap, group, topics.events), timeout=30, what="rewind")
        third = deliverer(tmp_path, topics, group).start()
        try:
            wait(lambda: caught_up(bootstrap, group, topics.events), "offsets again", third)
        finally:
            third.stop()

    got = receiver.requests()
    assert len(got) == 1, [g.headers for g in got]
    event = verified(hook["secret"], got[0])
    assert event["id"] == got[0].headers["webhook-id"] == f"{run_id}:2"
    assert event["type"] == "run.finished"
    assert event["data"] == {"run_id": run_id, "status": "completed", "reason": None}
    assert got[0].headers["host"] == f"localhost:{receiver.port}"
    rows = deliveries(pg_dsn, hook["id"])
    assert [(r[2], r[3], r[4]) for r in rows] == [("delivered", 1, 200)]


@pytest.mark.fault
def test_a_receiver_failing_twice_gets_it_on_the_third_attempt_across_a_kill(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str, tmp_path: Path
) -> None:
    tenant, run_id, group = f"t-{unique}", f"run-{unique}", f"deliver-{unique}"
    with receiving([500, 500, 200]) as receiver, api(pg_dsn, bootstrap, topics, tenant) as w:
        hook = w.register(tenant, receiver.url(), ["run.finished"])
        now = int(time.time() * 1000)
        journal(bootstrap, topics, accepted(run_id, tenant, now),
                finished(run_id, 2, now + 5, "failed"))  # fmt: skip
        first = deliverer(tmp_path, topics, group).start()
        try:
            # The first attempt's 500 is recorded; then the deliverer dies in its backoff.
            wait(
                lambda: row_is(pg_dsn, hook["id"], slice(4, 6), (500, None)),
                "the first attempt's 500 recorded",
                first,
            )
        finally:
            first.kill9()
        again = deliverer(tmp_path, topics, group).start()
        try:
            wait(lambda: row_is(pg_dsn, hook["id"], 2, "delivered"), "the row delivered", again)
        finally:
            again.stop()

    got = receiver.requests()
    assert [g.status for g in got] == [500, 500, 200]
    assert {g.headers["webhook-id"] for g in got} == {f"{run_id}:2"}  # one message, 3 attempts
    assert all(verified(hook["secret"], g)["data"]["status"] == "failed" for g in got)
    assert got[0].body == got[1].body == got[2].body
    event_id, kind, state, attempts, status, error = deliveries(pg_dsn, hook["id"])[0]
    assert (event_id, kind, state, attempts, status, error) == (
        f"{run_id}:2",
        "run.finished",
        "delivered",
        3,
        200,
        None,
    )


def test_each_tenant_hears_its_own_events_and_410_disables_a_hook(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str, tmp_path: Path
) -> None:
    a, b, group = f"ta-{unique}", f"tb-{unique}", f"deliver-{unique}"
    run_a, run_b = f"run-a-{unique}", f"run-b-{unique}"
    with (
        receiving() as ra,
        receiving([410]) as rb,
        api(pg_dsn, bootstrap, topics, a, b) as w,
    ):
        hook_a = w.register(a, ra.url(), ["approval.requested", "run.finished"])
        hook_b = w.register(b, rb.url(), ["run.finished"])
        now = int(time.time() * 1000)
        approval = Approval(approval_id="apr_1", tool_call_id="call_1", tool="send_email",
                            arguments_hash="h", policy_version="v1", deadline_ms=now + 60_000,
                            requested_at_ms=now)  # fmt: skip
        requested = ev.ApprovalRequested(
            run_id=run_a,
            seq=2,
            at_ms=now + 1,
            step_id="s1",
            approval=approval,
            step_deadline_ms=now + 60_000,
            run_deadline_ms=now + 600_000,
        )
        running = ev.RunStatusChanged(
            run_id=run_b, seq=2, at_ms=now + 1, status="in_progress", closed_step=None,
            expires_at_ms=None,
        )  # fmt: skip
        journal(
            bootstrap,
            topics,
            accepted(run_a, a, now),
            requested,
            finished(run_a, 3, now + 2),
            accepted(run_b, b, now),
            running,
            finished(run_b, 3, now + 2),
        )
        proc = deliverer(tmp_path, topics, group).start()
        try:
            wait(lambda: None if len(ra.requests()) == 2 else "waiting", "a's two events", proc)
            wait(lambda: row_is(pg_dsn, hook_b["id"], 2, "failed"), "b's 410", proc)
            wait(lambda: caught_up(bootstrap, group, topics.events), "offsets", proc)
        finally:
            proc.stop()
        listed = w.client.get("/v1/webhooks", headers=w.auth(b)).json()

    events = sorted((verified(hook_a["secret"], g) for g in ra.requests()), key=lambda e: e["id"])
    assert [(e["id"], e["type"]) for e in events] == [
        (f"{run_a}:2", "approval.requested"),
        (f"{run_a}:3", "run.finished"),
    ]
    assert events[0]["data"] == {
        "run_id": run_a,
        "approval_id": "apr_1",
        "tool": "send_email",
        "tool_call_id": "call_1",
        "deadline": events[0]["data"]["deadline"],
    }
    assert events[0]["data"]["deadline"].endswith("Z")
    (only,) = rb.requests()
    assert verified(hook_b["secret"], only)["data"]["run_id"] == run_b
    assert [r[2:5] for r in deliveries(pg_dsn, hook_b["id"])] == [("failed", 1, 410)]
    assert listed[0]["disabled_at"] is not None
    assert listed[0]["disabled_reason"] == "the receiver answered 410 Gone"
    with psycopg.connect(pg_dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM api_hook_runs WHERE journal = %s", (topics.events,)
        ).fetchone()
    assert left == (0,)  # both runs finished: the map keeps live runs only


def test_the_recorder_writes_each_row_once_and_finds_the_tenant(
    pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    """The recorder's transaction alone (no Kafka): a batch written twice, a run known only to
    the forensics projection, an event from before the hook, a run nobody knows."""
    migrate(pg_dsn)
    tenant = f"t-{unique}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        hook = hooks.create(conn, tenant, "http://127.0.0.1:9/", ["run.finished"], None)
        row = conn.execute("SELECT created_at FROM api_hooks WHERE hook_id = %s", (hook.id,))
        created = row.fetchone()
    assert created is not None
    now = int(created[0].timestamp() * 1000) + 1_000
    recorder = Recorder(DeliverConfig("127.0.0.1:9", pg_dsn, topics), DeliverStats())

    def notice(run_id: str, seq: int, at_ms: int) -> hooks.Notice:
        n = hooks.notice(finished(run_id, seq, at_ms))
        assert n is not None
        return n

    live, projected, old = f"live-{unique}", f"proj-{unique}", f"old-{unique}"
    with psycopg.connect(pg_dsn) as conn:
        first = Batch(accepted={live: tenant}, notices=[notice(live, 2, now)], finished=[live])
        assert recorder.record(conn, first) == 1
        assert recorder.record(conn, first) == 0  # the same records, consumed again
        conn.execute(
            "INSERT INTO forensics_runs (journal, run_id, tenant, thread_id, provider, "
            "input_hash, kafka_partition, first_offset, last_offset, last_seq, phase, "
            "accepted_at, updated_at) VALUES (%s, %s, %s, 'th', 'assistants', 'h', 0, 0, 0, 1, "
            "'queued', now(), now())",
            (topics.events, projected, tenant),
        )
        conn.commit()
        assert recorder.record(conn, Batch(notices=[notice(projected, 7, now)])) == 1
        before_the_hook = Batch(
            accepted={old: tenant},
            notices=[notice(old, 2, now - 60_000), notice(f"ghost-{unique}", 2, now)],
        )
        assert recorder.record(conn, before_the_hook) == 0
        left = conn.execute(
            "SELECT run_id FROM api_hook_runs WHERE journal = %s ORDER BY run_id",
            (topics.events,),
        ).fetchall()
    assert [r[2:4] for r in deliveries(pg_dsn, hook.id)] == [("pending", 0)] * 2
    assert [r[0] for r in deliveries(pg_dsn, hook.id)] == [f"{live}:2", f"{projected}:7"]
    assert left == [(old,)]  # live finished (its entry went with it); old has not

"""G1 under forced duplicate delivery and a Redis outage, on the whole product.

The ground truth is the outside world's own records: the sandbox gateway's audit log (one
row per real action) and the simulated provider's runs and accepted submissions. Each test
has its own database, so no other test's reset can empty that evidence.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from runcoord.kafka import TopicNames, consumer_config, producer_config
from runcoord.stack.polling import wait_until
from tests.integration.e2e import (
    SDK_WARNINGS,
    WRITE_TOOLS,
    Stack,
    assert_one_action_per_call,
    launch,
)
from tests.integration.faultkit import (
    Journal,
    PrivateRedis,
    mixed_turns,
    now_ms,
    private_database,
    stopping,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault, *SDK_WARNINGS]

EXECUTORS = ("provider-exec", "tools-exec", "submit-exec")
EXECUTOR_NAMES = ("provider", "tools", "submissions")


def executors_env(**env: str) -> dict[str, dict[str, str]]:
    return {name: dict(env) for name in EXECUTORS}


class Duplicator:
    """Delivers every intent twice: each record read from ``effects`` is produced again, to
    the same partition with the same key and headers, marked as a copy (never copied again).
    """

    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        self.topics = topics
        self.bootstrap = bootstrap
        self.consumer = Consumer(consumer_config(bootstrap, f"dup-{uuid.uuid4().hex}"))
        # A consumer per executor group, only to read its committed offsets (never joined).
        self.readers: dict[str, Consumer] = {}
        self.producer = Producer(producer_config(bootstrap))
        self.copies: Counter[str] = Counter()
        # Per partition, the offset just past the last copy the broker acknowledged.
        self.written: dict[int, int] = {}
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="duplicator")

    @contextmanager
    def running(self) -> Iterator[Duplicator]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join(30)
            for reader in self.readers.values():
                reader.close()
            assert not self.thread.is_alive()

    def _delivered(self, kind: str, err: KafkaError | None, msg: Message) -> None:
        # A copy counts once the broker has it (this runs in the duplicator's thread).
        if err is not None:
            self.failed.append(f"{kind}: {err}")
            return
        p, o = msg.partition() or 0, (msg.offset() or 0) + 1
        self.written[p] = max(self.written.get(p, 0), o)
        self.copies[kind] += 1

    def unread_by(self, groups: list[str]) -> str | None:
        """None once every group has committed past every copy written so far: each copy
        was read and its work finished (an executor commits an intent once it is handled,
        and every executor reads every record of ``effects``, whatever its kind)."""
        written = dict(self.written)
        parts = [TopicPartition(self.topics.effects, p) for p in written]
        for group in groups:
            if group not in self.readers:
                self.readers[group] = Consumer(consumer_config(self.bootstrap, group))
            for tp in self.readers[group].committed(parts, timeout=10):
                if tp.offset < written[tp.partition]:
                    return f"{group} at {tp.offset} on p{tp.partition}, copies to {written}"
        return None

    def _run(self) -> None:
        self.consumer.subscribe([self.topics.effects])
        try:
            while not self.stop.is_set():
                for msg in self.consumer.consume(500, 0.2):
                    if msg.error() is not None:
                        continue
                    raw: Any = msg.headers() or []
                    headers: list[tuple[str, Any]] = list(raw)
                    if any(k == "copy" for k, _ in headers):
                        continue
                    kind = (dict(headers).get("kind") or b"?").decode()
                    self.producer.produce(
                        msg.topic() or "",
                        msg.value(),
                        msg.key(),
                        partition=msg.partition() or 0,
                        headers=[*headers, ("copy", b"1")],
                        on_delivery=partial(self._delivered, kind),
                    )
                self.producer.poll(0)
        finally:
            self.producer.flush(10)
            self.consumer.close()


def alive(stack: Stack) -> None:
    for p in stack.procs.values():
        assert p.alive(), f"{p.name} died:\n{p.tail()}"


def writes_of(stack: Stack, runs: set[str]) -> list[dict[str, Any]]:
    return [r for r in stack.audit() if r["run_id"] in runs and r["tool"] in WRITE_TOOLS]


def test_every_effect_delivered_twice_acts_once(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> None:
    # post_note too: with no key and no lookup, only the ledger stands between a duplicate
    # delivery and a second note.
    runs, expected = mixed_turns(10, seed=11, tag=f"dup-{uuid.uuid4().hex[:6]}", unknowable=True)
    steps = sum(len(s["steps"]) for s in runs.values())
    calls = sum(len(step["tool_calls"]) for s in runs.values() for step in s["steps"])
    with (
        private_database(pg_dsn) as dsn,
        stopping(PrivateRedis(tmp_path / "redis.log").start()) as redis,
        launch(
            bootstrap,
            dsn,
            topics,
            tmp_path,
            executors_env(RUNCOORD_POSTGRES_DSN=dsn, RUNCOORD_REDIS_URL=redis.url),
        ) as stack,
        Duplicator(bootstrap, topics).running() as dup,
    ):
        journal = Journal(bootstrap, topics)
        try:
            stack.start_turns(runs)
            statuses = journal.until_finished(set(runs), 180, meanwhile=lambda: alive(stack))
        finally:
            journal.close()
        assert statuses == dict.fromkeys(runs, "completed")
        # Every intent of every kind really was delivered twice. A run completes on the
        # original of its last submission, and the copy may still be on its way: wait for
        # the copies, then for every executor to have read and handled each of them, before
        # counting actions.
        wanted = {"create_run": len(runs), "tool_call": calls}
        wanted |= {"submit_outputs": steps, "observe_run": len(runs)}

        def copied() -> str | None:
            assert not dup.failed, f"copies not written: {dup.failed}"
            short = {k: (dup.copies[k], n) for k, n in wanted.items() if dup.copies[k] < n}
            return f"copies (made, wanted): {short}" if short else None

        wait_until(copied, timeout=60, what="a copy of every intent")
        prefix = topics.inbox.removesuffix("runs.inbox")
        groups = [f"{prefix}runcoord-executor-{n}" for n in EXECUTOR_NAMES]
        wait_until(lambda: dup.unread_by(groups), timeout=120, what="every copy handled")
        # One audit row per tool call, one provider run per turn, one accepted submission
        # per step; and every write the scripts make happened.
        assert_one_action_per_call(stack, set(runs))
        assert len(writes_of(stack, set(runs))) == expected


def test_redis_killed_mid_run_then_back_no_duplicate_every_run_finishes(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> None:
    tag = f"redis-{uuid.uuid4().hex[:6]}"
    before, before_writes = mixed_turns(10, seed=21, tag=f"{tag}-a")
    during, during_writes = mixed_turns(5, seed=22, tag=f"{tag}-b")
    after, after_writes = mixed_turns(5, seed=23, tag=f"{tag}-c")
    with (
        stopping(PrivateRedis(tmp_path / "redis.log").start()) as redis,
        private_database(pg_dsn) as dsn,
        launch(
            bootstrap,
            dsn,
            topics,
            tmp_path,
            executors_env(RUNCOORD_POSTGRES_DSN=dsn, RUNCOORD_REDIS_URL=redis.url),
        ) as stack,
    ):
        journal = Journal(bootstrap, topics)
        try:
            stack.start_turns(before)

            def acting() -> str | None:
                return None if writes_of(stack, set(before)) else "no write yet"

            # Mid-run: the first write happened, and the executors are using Redis.
            wait_until(acting, timeout=120, what="the first write of the batch")
            assert redis.served(), "the executors were using this Redis"
            redis.kill9()
            killed_at = now_ms()

            # Degraded path: the runs in flight finish, and new ones too, without Redis.
            statuses = journal.until_finished(set(before), 180, meanwhile=lambda: alive(stack))
            assert statuses == dict.fromkeys(before, "completed")
            late = [r for r in before if journal.finished[r].at_ms > killed_at]
            assert late, "Redis died while the batch was running"
            # The tool executor's limiter heartbeats into Redis every 2 s: it notices.
            wait_until(
                lambda: (
                    None
                    if "redis unavailable" in stack.procs["tools-exec"].tail(1_000_000)
                    else "not noticed yet"
                ),
                timeout=30,
                what="the tool executor to find Redis gone",
            )
            stack.start_turns(during)
            statuses = journal.until_finished(set(during), 180, meanwhile=lambda: alive(stack))
            assert statuses == dict.fromkeys(during, "completed")

            # Redis back (empty, as after a crash): the executors use it again. Each one
            # skips Redis for its breaker's cooldown after its last failure (2 s), and a
            # fast batch can finish inside it: turns keep coming, a few at a time, until
            # Redis has served an executor, within a deadline.
            redis.start()
            later = dict(after)
            stack.start_turns(after)
            statuses = journal.until_finished(set(after), 180, meanwhile=lambda: alive(stack))
            assert statuses == dict.fromkeys(after, "completed")
            deadline, round_ = time.monotonic() + 60, 0
            while not redis.served():
                assert time.monotonic() < deadline, "the executors never came back to Redis"
                round_ += 1
                more, more_writes = mixed_turns(2, seed=30 + round_, tag=f"{tag}-d{round_}")
                stack.start_turns(more)
                statuses = journal.until_finished(set(more), 180, meanwhile=lambda: alive(stack))
                assert statuses == dict.fromkeys(more, "completed")
                later |= more
                after_writes += more_writes
        finally:
            journal.close()
        every = set(before) | set(during) | set(later)
        assert_one_action_per_call(stack, every)
        assert len(writes_of(stack, every)) == before_writes + during_writes + after_writes

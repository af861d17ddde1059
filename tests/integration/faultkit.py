"""What fault tests need on a shared machine: a database, a Redis, a journal, a workload.

- ``private_database``: a fresh PostgreSQL database for the gateway's audit log and the
  effect ledger. The shared database's sandbox tables are emptied by every other test's
  ``/_sim/reset``; a count of actions is only evidence in a database nobody else touches.
- ``PrivateRedis``: a redis-server of the test's own on a free port, which the test may kill
  with SIGKILL and start again (the shared Redis serves every engineer: never stop that one).
- ``Journal``: reads ``runs.events`` (read_committed) and keeps every run's whole history,
  for checks a test makes from the journal alone (terminal runs, step deadlines).
- ``mixed_turns``: seeded scripts for the simulated provider, with the writes they make.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from confluent_kafka import Consumer
from psycopg import conninfo, sql

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.db import migrate
from runcoord.domain import events as ev
from runcoord.kafka import TopicNames, consumer_config
from runcoord.stack.polling import wait_until
from tests.integration.processes import free_port


@contextmanager
def private_database(dsn: str) -> Iterator[str]:
    """A new, migrated database on ``dsn``'s server; dropped afterwards."""
    name = f"rc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    own = conninfo.make_conninfo(dsn, dbname=name)
    try:
        migrate(own)
        yield own
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class PrivateRedis:
    """A redis-server in the foreground (so its pid is ours to SIGKILL), nothing on disk."""

    def __init__(self, log: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (the stack installs it)"
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        argv = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=30, what=f"private redis on {self.port}")
        return self

    def _answers(self) -> str | None:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{self.log.read_text()[-2000:]}")
        try:
            with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                client.ping()
        except redis.RedisError as exc:
            return str(exc)
        return None

    def kill9(self) -> None:
        assert self.popen is not None and self.popen.poll() is None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def served(self) -> set[str]:
        """The commands this incarnation has served others (its stats start empty)."""
        with redis.Redis.from_url(self.url, socket_timeout=2, decode_responses=True) as client:
            stats = client.info("commandstats")
        ours = {"ping", "info", "command", "client", "hello"}  # this probe's own
        names = {k.removeprefix("cmdstat_").split("|")[0] for k in stats}
        return names - ours

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@contextmanager
def stopping(redis: PrivateRedis) -> Iterator[PrivateRedis]:
    try:
        yield redis
    finally:
        redis.stop()


class Journal:
    """Every event of ``runs.events`` read so far, by run, in journal order."""

    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        self.codec = AvroCodec()
        self.consumer = Consumer(consumer_config(bootstrap, f"journal-{uuid.uuid4().hex}"))
        self.consumer.subscribe([topics.events])
        self.events: dict[str, list[ev.JournalEvent]] = defaultdict(list)
        self.finished: dict[str, ev.RunFinished] = {}

    def close(self) -> None:
        self.consumer.close()

    def read(self, wait_s: float = 0.2) -> None:
        for msg in self.consumer.consume(1000, wait_s):
            if msg.error() is not None:
                continue
            event = from_record(*self.codec.decode(msg.value() or b""))
            self.events[event.run_id].append(event)
            if isinstance(event, ev.RunFinished):
                self.finished[event.run_id] = event

    def until_finished(
        self,
        runs: set[str],
        timeout: float,
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> dict[str, str]:
        """Read until every run in ``runs`` finished; ``meanwhile`` runs between reads."""

        def done() -> str | None:
            self.read()
            if meanwhile is not None:
                meanwhile()
            left = runs - set(self.finished)
            return None if not left else f"{len(left)} runs not finished, e.g. {min(left)}"

        wait_until(done, timeout=timeout, what=f"{len(runs)} runs finished", interval=0)
        return {r: self.finished[r].status for r in runs}

    def of(self, run_id: str) -> list[ev.JournalEvent]:
        return self.events[run_id]


def now_ms() -> int:
    return int(time.time() * 1000)


# Arguments each sandbox tool accepts (runcoord/sim/tools/catalog.py), distinct per call.
WRITES: dict[str, Callable[[int], dict[str, Any]]] = {
    # idempotency key: a retry carries the same key, the gateway answers the first result
    "create_ticket": lambda i: {"subject": f"late order {i}"},
    "send_email": lambda i: {"to": f"c{i}@example.com", "subject": f"your order {i}"},
    "charge_card": lambda i: {"customer_id": f"C-{i}", "amount_cents": 100 + i},
    # no key, but a lookup: an unknown outcome is reconciled, never blindly retried
    "update_crm": lambda i: {"customer_id": f"C-{i}", "fields": {"tier": "gold"}},
}
# No key and no lookup: after an unknown outcome nobody can know whether it acted.
UNKNOWABLE: dict[str, Callable[[int], dict[str, Any]]] = {
    "post_note": lambda i: {"text": f"called customer {i}"},
}
READS: dict[str, Callable[[int], dict[str, Any]]] = {
    "lookup_customer": lambda i: {"customer_id": f"C-{i}"},
    "search_kb": lambda i: {"query": f"refund {i}"},
    "get_order_status": lambda i: {"order_id": f"O-{i}"},
}


def mixed_turns(
    n: int, seed: int, tag: str, *, unknowable: bool = False
) -> tuple[dict[str, dict[str, Any]], int]:
    """``n`` turns of 1-2 steps of 1-3 tool calls, each step with a write; and the writes.

    ``unknowable`` adds post_note to the writes drawn from (no key, no lookup).
    """
    rng = random.Random(seed)
    writes = {**WRITES, **(UNKNOWABLE if unknowable else {})}
    scripts: dict[str, dict[str, Any]] = {}
    expected = 0
    for t in range(n):
        steps = []
        for s in range(rng.randint(1, 2)):
            i = t * 10 + s
            name = rng.choice(sorted(writes))
            calls = [{"name": name, "arguments": writes[name](i)}]
            for _ in range(rng.randint(0, 2)):
                pool = writes if rng.random() < 0.45 else READS
                name = rng.choice(sorted(pool))
                calls.append({"name": name, "arguments": pool[name](i)})
            expected += sum(c["name"] in writes for c in calls)
            steps.append({"tool_calls": calls, "latency_ms": 20})
        scripts[f"{tag}-{t}"] = {
            "steps": steps,
            "final": {"message": "done", "latency_ms": 10},
            "queue_ms": 5,
        }
    return scripts, expected

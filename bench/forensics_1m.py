"""Bench: `runcoord forensics run` against a journal of ~1M events.

    .venv/bin/python bench/forensics_1m.py [--events 1000000] [--keep]

1. Creates a topic set under its own prefix (topics.yaml: 6 partitions).
2. Fills runs.events (and effects) with ~1M events of ~105k interleaved runs: each run shape
   is Avro-encoded once and copied by byte replacement of its ids, then produced in big
   batches (idempotent producer, lz4), so the fill takes seconds, not the coordinator's time.
3. Projects it with the real projector (one consumer, batches of 20k) and times that.
4. Times `runcoord forensics run RUN` as a user runs it (a new process: interpreter start,
   imports, PostgreSQL queries, Kafka seeks by offset, rendering) for a few random runs, and
   the same work in-process without the start-up.
5. Deletes the topics and the projection rows (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from runcoord.codec import AvroCodec
from runcoord.config import REPO_ROOT, load
from runcoord.db import migrate
from runcoord.forensics.gather import gather
from runcoord.forensics.projector import ProjectorConfig, projecting
from runcoord.forensics.reader import PositionReader
from runcoord.forensics.synthetic import Encoded, Templates, interleave
from runcoord.forensics.timeline import build_story
from runcoord.kafka import TopicNames, consumer_config, producer_config
from runcoord.registry import load_registry
from runcoord.stack.polling import wait_until
from runcoord.topics import apply, delete, load_specs


def fill(bootstrap: str, topics: TopicNames, target: int, seed: int) -> tuple[int, int, float]:
    """Produce runs until ``target`` events; return (events, records, seconds)."""
    rng = random.Random(seed)
    templates = Templates(topics, AvroCodec(), 6, int(time.time() * 1000) - 3_600_000)
    overrides: dict[str, Any] = {
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    producer = Producer(producer_config(bootstrap, client_id="bench-fill", **overrides))
    events = records = 0
    started = time.monotonic()

    def runs() -> Iterator[list[Encoded]]:
        n = 0
        while events < target:
            yield templates.run(n, rng.randrange(4))
            n += 1

    for rec in interleave(runs(), 3000, rng):
        while True:
            try:
                producer.produce(
                    rec.topic, rec.value, rec.key, partition=rec.partition, headers=rec.headers
                )
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain it
        records += 1
        if rec.topic == topics.events:
            events += 1
        if records % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("fill: records still undelivered after 120 s")
    return events, records, time.monotonic() - started


def timed_cli(run_id: str, prefix: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, its output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runcoord.cli",
            "forensics",
            "run",
            run_id,
            "--topic-prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--prefix", default="bench1m.")
    parser.add_argument("--runs", type=int, default=5, help="runs to explain")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the topics and rows")
    parser.add_argument(
        "--reuse", action="store_true", help="the topics are filled: finish projecting, time"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "forensics_1m.json")
    args = parser.parse_args()
    settings = load()
    topics = TopicNames.with_prefix(args.prefix)
    migrate(settings.dsn)
    if not args.reuse:
        _drop_rows(settings.dsn, topics.events)  # a run that was interrupted before cleaning up
    apply(settings.bootstrap, load_specs(settings.topics_file), args.prefix)
    try:
        if args.reuse:
            events, records, fill_s = _on_topics(settings.bootstrap, topics), 0, 0.0
            print(f"reusing {events} events", flush=True)
        else:
            events, records, fill_s = fill(settings.bootstrap, topics, args.events, args.seed)
            print(f"filled {events} events ({records} records) in {fill_s:.1f} s", flush=True)

        def projected() -> str | None:
            try:
                n = _projected(settings.dsn, topics.events)
            except psycopg.OperationalError as exc:  # the shared stack is restarted by others
                return f"PostgreSQL unavailable: {exc}"
            return None if n >= events else f"{n} of {events} events projected"

        already = _projected(settings.dsn, topics.events)
        started = time.monotonic()
        config = ProjectorConfig(
            settings.bootstrap, settings.dsn, topics, group_id=f"{args.prefix}projector",
            batch_max=20_000,
        )  # fmt: skip
        with projecting(config):
            wait_until(projected, timeout=3600, what="the projection", interval=2.0)
        project_s = time.monotonic() - started
        rate = (events - already) / project_s
        print(f"projected {events - already} in {project_s:.1f} s ({rate:.0f}/s)", flush=True)

        with psycopg.connect(settings.dsn) as conn:
            picks = [
                r[0]
                for r in conn.execute(
                    "SELECT run_id FROM forensics_runs WHERE journal = %s "
                    "ORDER BY md5(run_id || %s) LIMIT %s",
                    (topics.events, str(args.seed), args.runs),
                ).fetchall()
            ]
        codec, registry = AvroCodec(), load_registry(load().tools_file)
        cli_s, cli_cpu_s, core_s, spans = [], [], [], []
        for run_id in picks:
            took, cpu, text = timed_cli(run_id, args.prefix)
            cli_s.append(took)
            cli_cpu_s.append(cpu)
            started = time.monotonic()
            with (
                psycopg.connect(settings.dsn) as conn,
                PositionReader(settings.bootstrap) as reader,
            ):
                facts = gather(conn, reader, topics, run_id, codec=codec, registry=registry)
                assert facts is not None and not facts.missing_seqs
                story = build_story(facts)
            core_s.append(time.monotonic() - started)
            spans.append(facts.run.last_offset - facts.run.first_offset)
            assert story.headline.split(" ")[1] == run_id and "completed" in text
            print(
                f"  {run_id}: cli {took:.2f} s ({cpu:.2f} s CPU), in-process {core_s[-1]:.2f} s, "
                f"{len(facts.events)} events spread over {spans[-1]} offsets",
                flush=True,
            )
        result = {
            "events": events,
            "records": records,
            "fill_s": round(fill_s, 1),
            "project_s": round(project_s, 1),
            "projected_now": events - already,
            "project_events_per_s": round(rate),
            "cli_s": {"median": round(statistics.median(cli_s), 2), "max": round(max(cli_s), 2)},
            "cli_cpu_s": {
                "median": round(statistics.median(cli_cpu_s), 2),
                "max": round(max(cli_cpu_s), 2),
            },
            # The machine is shared: wall times mean little without the load they ran under.
            "load_average_1m": round(os.getloadavg()[0], 1),
            "cpus": os.cpu_count(),
            "in_process_s": {
                "median": round(statistics.median(core_s), 3),
                "max": round(max(core_s), 3),
            },
            "offset_span_median": statistics.median(spans),
            "runs": picks,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            delete(settings.bootstrap, list(topics.all()))
            _drop_rows(settings.dsn, topics.events)


def _projected(dsn: str, journal: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM forensics_events WHERE journal = %s", (journal,)
        ).fetchone()
    return int(row[0]) if row else 0


def _on_topics(bootstrap: str, topics: TopicNames) -> int:
    consumer = Consumer(consumer_config(bootstrap, "bench-count"))
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topics.events, p), timeout=10)[1]
            for p in range(6)
        )
    finally:
        consumer.close()


def _drop_rows(dsn: str, journal: str) -> None:
    with psycopg.connect(dsn) as conn:
        for table in ("forensics_events", "forensics_runs", "forensics_steps"):
            conn.execute(f"DELETE FROM {table} WHERE journal = %s", (journal,))
        conn.execute("DELETE FROM forensics_intents WHERE journal = %s", (journal,))
        conn.execute("DELETE FROM forensics_dead_letters WHERE journal = %s", (journal,))


if __name__ == "__main__":
    main()

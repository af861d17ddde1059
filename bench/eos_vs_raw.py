"""(a) What exactly-once costs: the coordinator's loop with transactions, the same loop with
at-least-once commits, and a raw consume→produce loop, side by side in one run.

All three read the same N ``StartRun`` records from one inbox topic, each in its own
consumer group and writing to its own output topics (a coordinator rebuilds its runs from
its ``runs.state`` on assignment: sharing one would hand the second loop the first one's
runs, and every StartRun would be a duplicate).

- exactly-once: the coordinator's real loop in-process (runcoord/coordinator/loop.py), one
  transaction per batch holding its events, snapshots, intents and input offsets;
- at-least-once: the same loop (same batch policy, same decisions, the same records
  written), but the records go out through a plain idempotent producer, which is flushed
  before the batch's offsets are committed synchronously. This is the comparison a user
  weighs: what the transaction costs over the usual way of not losing inputs;
- raw: decode each record and produce three records per input (what the coordinator
  writes for a StartRun), committing offsets asynchronously: no decisions at all, the
  ceiling of one Python process on this broker.

Inputs per second of each, from the first input to the last, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext, redirect_stdout
from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.config import load
from runcoord.coordinator.loop import Coordinator, LoopConfig
from runcoord.coordinator.outbox import Record
from runcoord.domain import Policy
from runcoord.domain.inputs import StartRun
from runcoord.errors import KafkaRetriable
from runcoord.harness.replay.env import create_topics, delete_topics
from runcoord.kafka import TopicNames, consumer_config, producer_config, take_batch, translate
from runcoord.registry import load_registry

SCRIPT = json.dumps(
    {"steps": [{"tool_calls": [{"name": "search_kb", "arguments": {"query": "x"}}]}]}
)
# Without progress for this long a loop is taken as stuck (it logs why), not waited for.
STUCK_S = 60.0


class AtLeastOnce(Coordinator):
    """The coordinator's loop with each transactional call replaced by its at-least-once
    counterpart; the rest of the loop, from take_batch to staging the decisions, is the
    real one.

    The loop makes no seam for this (it builds its transactional producer inside
    ``_session`` and calls it through ``_call`` and ``_commit``), so this overrides those
    private methods. The transactional producer is still built but never initialised or
    used; ``_produce`` sends through ``_plain`` instead.
    """

    _plain: Producer
    _consumer: Consumer
    _undelivered: KafkaError | None = None  # the first failed delivery since the last flush
    _offsets_due = False  # this batch asked for its offsets to be committed

    def _session(self, stop: threading.Event) -> None:
        c = self.config
        self._plain = Producer(
            producer_config(c.bootstrap, client_id=c.instance_id)
            # Failures only: the transactional producer pays no callback per record either.
            | {"on_delivery": self._delivered, "delivery.report.only.error": True}
        )
        try:
            super()._session(stop)
        finally:
            self._plain.flush(5)

    def _batch(self, consumer: Consumer, producer: Producer) -> None:
        self._consumer = consumer  # _commit commits the batch's offsets through it
        self._offsets_due = False
        super()._batch(consumer, producer)

    def _call(self, what: str, fn: Callable[[], object]) -> None:
        # No transaction to open, initialise or abort: records go out as they are produced.
        if what == "send_offsets_to_transaction":
            self._offsets_due = True  # committed by _commit, once the records are out
        elif what not in ("init_transactions", "begin_transaction", "abort_transaction"):
            # A call this variant has no counterpart for: measuring on would compare
            # something else than the loop.
            raise NotImplementedError(f"at-least-once has no counterpart for {what}")

    def _produce(self, producer: Producer, r: Record) -> None:
        super()._produce(self._plain, r)

    def _commit(self, producer: Producer) -> None:
        # An abort after this raises re-reads the batch; what was already sent stays
        # written: the duplicates at-least-once allows.
        if self._plain.flush(self.config.call_timeout_s) > 0:
            raise KafkaRetriable("records still queued after flush")
        if self._undelivered is not None:
            error, self._undelivered = self._undelivered, None
            raise KafkaRetriable(f"a record was not delivered: {error}")
        if self._offsets_due:
            try:
                # The consumer's positions: just past the batch take_batch returned.
                self._consumer.commit(asynchronous=False)
            except KafkaException as exc:
                raise translate(exc) from exc

    def _delivered(self, error: KafkaError | None, _msg: Message) -> None:
        if error is not None and self._undelivered is None:
            self._undelivered = error


def fill(bootstrap: str, topic: str, count: int, codec: AvroCodec) -> int:
    """Write ``count`` StartRun records; the topic's partition count."""
    producer = Producer({**producer_config(bootstrap), "linger.ms": 20})
    for i in range(count):
        run_id = f"bench-{i}"
        start = StartRun(
            run_id,
            "t1",
            f"thread_{i % 500}",
            "asst_bench",
            "assistants",
            "hello",
            int(time.time() * 1000),
            {"sim_script": SCRIPT},
        )
        name, datum = to_record(start)
        producer.produce(topic, codec.encode(name, datum), run_id.encode())
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    return len(producer.list_topics(topic, timeout=10).topics[topic].partitions)


def coordinator(loop: Coordinator, count: int) -> dict[str, float]:
    """Run ``loop`` until it has applied ``count`` inputs; its figures."""
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    try:
        # The clock starts at the first batch applied (group join and rebuild excluded).
        _wait(loop, lambda: loop.stats.inputs > 0, worker)
        started, first = time.monotonic(), loop.stats.inputs
        loop.stats.take_txn_ms()
        _wait(loop, lambda: loop.stats.inputs >= count, worker)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        worker.join(60)
    s = loop.stats
    batch_ms = s.take_txn_ms()
    return {
        "inputs_per_s": (count - first) / elapsed,
        "batches": s.batches,
        "inputs_per_batch": s.inputs / s.batches,
        "batch_p50_ms": statistics.median(batch_ms) if batch_ms else 0.0,
        "records_out_per_input": s.records_out / s.inputs,
        "aborts": s.aborts,
    }


def _wait(loop: Coordinator, done: Callable[[], bool], worker: threading.Thread) -> None:
    last, since = loop.stats.inputs, time.monotonic()
    while not done():
        if not worker.is_alive():
            raise RuntimeError(f"{loop.config.instance_id}: the loop ended early")
        if loop.stats.inputs != last:
            last, since = loop.stats.inputs, time.monotonic()
        elif time.monotonic() - since > STUCK_S:
            raise RuntimeError(f"{loop.config.instance_id}: no input applied in {STUCK_S:.0f} s")
        time.sleep(0.005)


def raw(
    bootstrap: str, topics: TopicNames, count: int, codec: AvroCodec, batch_max: int, wait_s: float
) -> dict[str, float]:
    consumer = Consumer(
        consumer_config(bootstrap, f"bench-raw-{uuid.uuid4().hex[:6]}", read_committed=False)
    )
    consumer.subscribe([topics.inbox])
    producer = Producer(producer_config(bootstrap))
    outs = (topics.events, topics.state, topics.effects)
    done, started, first = 0, 0.0, 0
    while done < count:
        batch = take_batch(consumer, batch_max, wait_s)
        if not batch:
            continue
        if not done:
            started, first = time.monotonic(), len(batch)
        for msg in batch:
            value = msg.value() or b""
            codec.decode(value)  # the same decode cost the coordinator pays
            for topic in outs:
                producer.produce(topic, value, msg.key())
        producer.poll(0)
        consumer.commit(asynchronous=True)
        done += len(batch)
    producer.flush(60)
    elapsed = time.monotonic() - started
    consumer.close()
    return {"inputs_per_s": (count - first) / elapsed, "records_out_per_input": len(outs)}


def measure(records: int) -> dict[str, Any]:
    settings = load()
    codec = AvroCodec()
    policy: Policy = load_registry(settings.tools_file).policy()
    run = uuid.uuid4().hex[:6]
    # One inbox for all three; each loop writes to its own topics (the module's docstring).
    prefixes = {
        name: f"bench{run}{short}."
        for name, short in (("raw", "raw"), ("at_least_once", "alo"), ("exactly_once", "eos"))
    }
    names: list[str] = []
    try:
        for prefix in prefixes.values():
            names += create_topics(settings, prefix)
        inbox = TopicNames.with_prefix(prefixes["raw"]).inbox
        topics = {
            name: replace(TopicNames.with_prefix(prefix), inbox=inbox)
            for name, prefix in prefixes.items()
        }
        partitions = fill(settings.bootstrap, inbox, records, codec)
        defaults = LoopConfig(bootstrap=settings.bootstrap)
        wait_s = defaults.batch_wait_ms / 1000
        figures: dict[str, Any] = {
            "records": records,
            "partitions": partitions,
            "batch_max": defaults.batch_max,
            "batch_wait_ms": defaults.batch_wait_ms,
            "raw": raw(
                settings.bootstrap, topics["raw"], records, codec, defaults.batch_max, wait_s
            ),
        }
        for name, kind in (("at_least_once", AtLeastOnce), ("exactly_once", Coordinator)):
            config = replace(
                defaults,
                topics=topics[name],
                group_id=f"bench-{name}-{run}",
                instance_id=f"bench-{name}-0",
            )
            figures[name] = coordinator(kind(config, policy, codec), records)
    finally:
        delete_topics(settings, names)
    eos = figures["exactly_once"]["inputs_per_s"]
    figures["eos_over_at_least_once"] = eos / figures["at_least_once"]["inputs_per_s"]
    figures["eos_over_raw"] = eos / figures["raw"]["inputs_per_s"]
    return figures


def table(f: dict[str, Any]) -> list[str]:
    lines = [
        f"records: {f['records']} StartRun inputs, {f['partitions']} partitions, one process "
        f"each; batches of up to {f['batch_max']}, waiting {f['batch_wait_ms']} ms at most",
        "loop                             inputs/s  in/batch  batch p50 ms  out/in  aborts",
    ]
    for label, key in (
        ("raw consume->produce", "raw"),
        ("coordinator, at-least-once", "at_least_once"),
        ("coordinator, exactly-once", "exactly_once"),
    ):
        r = f[key]
        if key == "raw":
            lines.append(
                f"{label:31}  {r['inputs_per_s']:8,.0f}  {'-':>8}  {'-':>12}  "
                f"{r['records_out_per_input']:6.2f}  {'-':>6}"
            )
            continue
        lines.append(
            f"{label:31}  {r['inputs_per_s']:8,.0f}  {r['inputs_per_batch']:8.0f}  "
            f"{r['batch_p50_ms']:12.1f}  {r['records_out_per_input']:6.2f}  {r['aborts']:6}"
        )
    lines.append(f"exactly-once / at-least-once: {f['eos_over_at_least_once']:.3f}")
    lines.append(f"exactly-once / raw:           {f['eos_over_raw']:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    # With --json stdout carries the JSON alone; everything else goes to stderr.
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        figures = measure(args.records)
        print("\n".join(table(figures)))
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

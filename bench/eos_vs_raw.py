"""(a) The coordinator's exactly-once loop vs a raw consume→produce loop, side by side.

Both read the same N ``StartRun`` records from one inbox topic. The coordinator runs its
real loop in-process (one transaction per batch: events, snapshots, intents and the input
offsets); the raw loop decodes each record and produces as many output records (three per
input: what the coordinator writes for a StartRun) with no transaction, committing offsets
asynchronously. Inputs per second of each, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer

from runcoord.codec import AvroCodec
from runcoord.codec.wire import to_record
from runcoord.config import load
from runcoord.coordinator.loop import Coordinator, LoopConfig
from runcoord.domain.inputs import StartRun
from runcoord.harness.replay.env import create_topics, delete_topics
from runcoord.kafka import TopicNames, consumer_config, producer_config
from runcoord.registry import load_registry

SCRIPT = json.dumps(
    {"steps": [{"tool_calls": [{"name": "search_kb", "arguments": {"query": "x"}}]}]}
)


def fill(bootstrap: str, topic: str, count: int, codec: AvroCodec) -> None:
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


def eos(bootstrap: str, topics: TopicNames, count: int) -> float:
    policy = load_registry(load().tools_file).policy()
    config = LoopConfig(
        bootstrap=bootstrap,
        topics=topics,
        group_id=f"bench-eos-{uuid.uuid4().hex[:6]}",
        instance_id="bench-coord-0",
        batch_max=500,
    )
    loop = Coordinator(config, policy)
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    # The clock starts at the first input applied (group join and state rebuild excluded).
    while loop.stats.inputs == 0:
        time.sleep(0.005)
    started, first = time.monotonic(), loop.stats.inputs
    while loop.stats.inputs < count:
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    stop.set()
    worker.join(60)
    return (count - first) / elapsed


def raw(bootstrap: str, topics: TopicNames, count: int, codec: AvroCodec) -> float:
    consumer = Consumer(
        consumer_config(bootstrap, f"bench-raw-{uuid.uuid4().hex[:6]}", read_committed=False)
    )
    consumer.subscribe([topics.inbox])
    producer = Producer(producer_config(bootstrap))
    outs = (topics.events, topics.state, topics.effects)
    done, started = 0, None
    while done < count:
        batch = consumer.consume(500, 1.0)
        if not batch:
            continue
        if started is None:
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
    assert started is not None
    elapsed = time.monotonic() - started
    consumer.close()
    return (count - first) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    settings = load()
    codec = AvroCodec()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    names = create_topics(settings, prefix)
    topics = TopicNames.with_prefix(prefix)
    try:
        fill(settings.bootstrap, topics.inbox, args.records, codec)
        raw_rate = raw(settings.bootstrap, topics, args.records, codec)
        eos_rate = eos(settings.bootstrap, topics, args.records)
    finally:
        delete_topics(settings, names)
    print(f"records: {args.records} StartRun inputs, 6 partitions, one process each")
    print(f"raw consume->produce (no transaction): {raw_rate:,.0f} inputs/s")
    print(f"coordinator exactly-once loop:          {eos_rate:,.0f} inputs/s")
    print(f"ratio (EOS / raw):                      {eos_rate / raw_rate:.3f}")


if __name__ == "__main__":
    main()

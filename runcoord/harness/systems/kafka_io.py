"""Kafka plumbing both transports share: a producer that remembers what it sent (for forced
duplicate deliveries) and a background follower of one or more topics."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer

from runcoord.kafka import consumer_config, producer_config, take_batch


class RememberingProducer:
    def __init__(self, bootstrap: str, topic: str, keep: int = 50_000) -> None:
        self.topic = topic
        self._producer = Producer(producer_config(bootstrap))
        self._sent: deque[tuple[bytes, bytes]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def send(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._producer.produce(self.topic, value, key)
            self._producer.poll(0)
            self._sent.append((key, value))

    def resend(self, pick: float) -> bytes | None:
        """Produce one already-sent record again (``pick`` in [0, 1) chooses which)."""
        with self._lock:
            if not self._sent:
                return None
            key, value = self._sent[min(len(self._sent) - 1, int(pick * len(self._sent)))]
            self._producer.produce(self.topic, value, key)
            self._producer.poll(0)
            return key

    def close(self) -> None:
        self._producer.flush(30)


class Follower:
    """Consume ``topics`` in a thread and hand each message to ``on_message``."""

    def __init__(
        self, bootstrap: str, group: str, topics: list[str], on_message: Callable[[Message], None]
    ) -> None:
        self._consumer = Consumer(consumer_config(bootstrap, group, read_committed=True))
        self._consumer.subscribe(topics)
        self._on_message = on_message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{group}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in take_batch(self._consumer, 500, 0.2):
                    if msg.error() is None:
                        self._on_message(msg)
        finally:
            self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)

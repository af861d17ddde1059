"""The agent API in-process (ASGI) on the real database, with keys for two tenants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from runcoord.api.app import ApiConfig, create_app
from runcoord.api.keys import create
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.db import migrate
from runcoord.kafka import TopicNames, consumer_config

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes, give!").decode()


@dataclass
class World:
    client: TestClient
    config: ApiConfig
    key_a: str
    key_b: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post_turn(self, key: str, thread: str, idem: str, text: str = "refund please") -> Any:
        return self.client.post(
            f"/v1/threads/{thread}/turns",
            json={"input": text},
            headers={**self.auth(key), "Idempotency-Key": idem},
        )


@contextmanager
def api(dsn: str, bootstrap: str, topics: TopicNames) -> Iterator[World]:
    migrate(dsn)
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as conn:
        key_a, key_b = create(conn, f"ta-{tag}"), create(conn, f"tb-{tag}")
    config = ApiConfig(dsn=dsn, bootstrap=bootstrap, topics=topics, webhook_secret=SECRET)
    with TestClient(create_app(config)) as client:
        yield World(client, config, key_a, key_b)


def signed(body: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """A webhook as the provider sends it (Standard Webhooks: HMAC-SHA256 of id.ts.body)."""
    raw = json.dumps(body).encode()
    webhook_id, stamp = f"wh_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{stamp}.{raw.decode()}".encode(), hashlib.sha256)
    signature = "v1," + base64.b64encode(mac.digest()).decode()
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return raw, headers


def inbox_records(bootstrap: str, topic: str) -> list[tuple[bytes, Any]]:
    """Everything on ``topic`` (key, decoded message), read up to the high watermarks."""
    consumer = Consumer(consumer_config(bootstrap, f"read-{uuid.uuid4().hex[:8]}"))
    codec = AvroCodec()
    out: list[tuple[bytes, Any]] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high == 0:
                continue
            consumer.assign([TopicPartition(topic, p, 0)])
            seen = 0
            deadline = time.monotonic() + 20
            while seen < high and time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is None:
                        seen = (msg.offset() or 0) + 1
                        out.append(
                            (msg.key() or b"", from_record(*codec.decode(msg.value() or b"")))
                        )
    finally:
        consumer.close()
    return out

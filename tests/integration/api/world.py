"""The agent API in-process (ASGI) on the real database, with keys for two tenants."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx
import psycopg
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from runcoord.api.app import ApiConfig, create_app
from runcoord.api.keys import create, tenant_for
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.config import load
from runcoord.db import migrate
from runcoord.kafka import TopicNames, consumer_config
from runcoord.stack.polling import wait_until

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes, give!").decode()


@dataclass
class World:
    client: TestClient
    config: ApiConfig
    key_a: str
    key_b: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def tenant_of(self, key: str) -> str:
        with psycopg.connect(self.config.dsn) as conn:
            tenant = tenant_for(conn, key)
        assert tenant is not None
        return tenant

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
    settings = config(dsn, bootstrap, topics)
    with TestClient(create_app(settings)) as client:
        yield World(client, settings, key_a, key_b)


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


# --------------------------------------------------------------------- over real HTTP


@dataclass
class Served:
    """The API served by uvicorn on a loopback port, and an httpx client for it."""

    url: str
    http: httpx.Client
    config: ApiConfig
    key_a: str
    key_b: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post_turn(self, key: str, thread: str, idem: str, **body: Any) -> httpx.Response:
        return self.http.post(
            f"/v1/threads/{thread}/turns",
            json={"input": "refund please", **body},
            headers={**self.auth(key), "Idempotency-Key": idem},
        )


def config(dsn: str, bootstrap: str, topics: TopicNames, **settings: Any) -> ApiConfig:
    """The API's configuration for a test: the webhook secret above, the suite's Redis (the
    dataclass's own default is the local stack's port, which CI's stack does not use),
    ``settings`` on top."""
    settings = {"redis_url": load().redis, **settings}
    return ApiConfig(dsn=dsn, bootstrap=bootstrap, topics=topics, webhook_secret=SECRET, **settings)


@contextmanager
def serving(config: ApiConfig, *, worker_threads: int | None = None) -> Iterator[Served]:
    """The app on uvicorn in a thread of its own, on a free loopback port, until exit.

    ``worker_threads`` caps the threadpool sync routes run in (anyio's default is 40), so a
    test can show that open event streams do not use it up."""
    migrate(config.dsn)
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        key_a, key_b = create(conn, f"ta-{tag}"), create(conn, f"tb-{tag}")
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning")
    )

    async def main() -> None:
        if worker_threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="api", daemon=True)
    thread.start()
    try:
        wait_until(lambda: None if server.started else "not started", timeout=30, what="the API")
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Served(url, http, config, key_a, key_b)
    finally:
        server.should_exit = True
        thread.join(30)


def key_id(key: str) -> str:
    """The id part of rk_<key_id>_<secret>."""
    return key.removeprefix("rk_").split("_", 1)[0]

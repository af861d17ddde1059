"""Shared fixtures. Integration tests talk to the real stack; they fail (never skip) when it
is down.

Point the suite at servers that are already running with RUNCOORD_BOOTSTRAP_SERVERS,
RUNCOORD_POSTGRES_DSN and RUNCOORD_REDIS_URL; otherwise the local stack's defaults are used
(`runcoord stack up`, which `make test` runs first).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urlsplit

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

from runcoord.config import Settings, load
from runcoord.kafka import TopicNames
from runcoord.stack.kafka_probe import answers_metadata
from runcoord.stack.polling import wait_until
from runcoord.topics import Level, TopicSpec, load_specs
from runcoord.topics import apply as apply_topics
from runcoord.topics import delete as delete_topics
from tests.tcp_proxy import TcpProxy


class NewTopicFactory(Protocol):
    def __call__(
        self, partitions: int = 1, *, config: dict[str, str] | None = None, name: str = ""
    ) -> str: ...


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load()


@pytest.fixture(scope="session")
def bootstrap(settings: Settings) -> str:
    return settings.bootstrap


@pytest.fixture(scope="session")
def pg_dsn(settings: Settings) -> str:
    return settings.dsn


@pytest.fixture(scope="session")
def redis_url(settings: Settings) -> str:
    return settings.redis


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the suite's Redis: stop it for an outage, start it to end one."""
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def unique() -> Iterator[str]:
    """A short unique token for topic names, group ids and transactional ids of one test."""
    yield uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_admin(bootstrap: str) -> AdminClient:
    """An admin client on a broker that answers; fails (not skips) the test when Kafka is down."""
    problem = answers_metadata(bootstrap, timeout=10)
    if problem is not None:
        pytest.fail(
            f"Kafka at {bootstrap} is not answering ({problem}). Start the stack with "
            "`runcoord stack up` (`make test` does), or point RUNCOORD_BOOTSTRAP_SERVERS at "
            "a running broker.",
            pytrace=False,
        )
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


@pytest.fixture(scope="session")
def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics declared in topics.yaml."""
    return load_specs(settings.topics_file)


@pytest.fixture
def topics(
    bootstrap: str, kafka_admin: AdminClient, topic_specs: list[TopicSpec], unique: str
) -> Iterator[TopicNames]:
    """runcoord's full topic set under a prefix of this test's own ("t<unique>."), deleted after."""
    prefix = f"t{unique}."
    findings = apply_topics(bootstrap, topic_specs, prefix)
    errors = [f for f in findings if f.level is Level.ERROR]
    assert not errors, f"creating the test's topics: {errors}"
    names = TopicNames.with_prefix(prefix)
    yield names
    delete_topics(bootstrap, list(names.all()))


@pytest.fixture
def new_topic(bootstrap: str, kafka_admin: AdminClient, unique: str) -> Iterator[NewTopicFactory]:
    """Factory: ``new_topic(partitions=2, config={...})`` makes a topic; deleted after the test."""
    created: list[str] = []

    def make(partitions: int = 1, *, config: dict[str, str] | None = None, name: str = "") -> str:
        topic = f"t{unique}.{name or 'topic'}{len(created)}"
        new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
        kafka_admin.create_topics([new])[topic].result(timeout=30)
        created.append(topic)

        def visible() -> str | None:
            found = kafka_admin.list_topics(topic, timeout=5).topics.get(topic)
            if found is None or found.error is not None:
                return "not in metadata yet"
            return None if len(found.partitions) == partitions else "partitions not all known yet"

        wait_until(visible, timeout=30, what=f"topic {topic}")
        return topic

    yield make
    if created:
        delete_topics(bootstrap, created)

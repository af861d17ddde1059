"""`apply` and `verify` against the real broker, each test on its own prefixed topic set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from runcoord.kafka import TopicNames
from runcoord.topics import Level, TopicSpec, apply, delete, describe, has_errors, verify

pytestmark = pytest.mark.integration


def test_topics_fixture_creates_the_declared_set(
    bootstrap: str, kafka_admin: AdminClient, topics: TopicNames, topic_specs: list[TopicSpec]
) -> None:
    metadata = kafka_admin.list_topics(timeout=10).topics
    for spec in topic_specs:
        name = f"{topics.inbox.removesuffix('runs.inbox')}{spec.name}"
        assert len(metadata[name].partitions) == spec.partitions, name
    prefix = topics.inbox.removesuffix("runs.inbox")
    assert not has_errors(verify(bootstrap, topic_specs, prefix))
    # Applying again changes nothing and creates nothing.
    again = apply(bootstrap, topic_specs, prefix)
    assert not [f for f in again if f.level is Level.INFO]


@pytest.fixture
def prefix(bootstrap: str, unique: str) -> Iterator[str]:
    prefix = f"t{unique}."
    yield prefix
    delete(bootstrap, list(TopicNames.with_prefix(prefix).all()))


def test_apply_never_changes_a_partition_count_and_verify_says_so(
    bootstrap: str, kafka_admin: AdminClient, topic_specs: list[TopicSpec], prefix: str
) -> None:
    wrong = f"{prefix}runs.events"
    kafka_admin.create_topics([NewTopic(wrong, num_partitions=2, replication_factor=1)])[
        wrong
    ].result(timeout=30)

    findings = apply(bootstrap, topic_specs, prefix)

    errors = [f for f in findings if f.level is Level.ERROR]
    assert any(f.topic == wrong and "has 2 partitions" in f.message for f in errors)
    assert any("co-partitioned" in f.message for f in errors)
    assert len(kafka_admin.list_topics(wrong, timeout=10).topics[wrong].partitions) == 2
    assert has_errors(verify(bootstrap, topic_specs, prefix))


def test_apply_sets_the_declared_configs_an_existing_topic_lacks(
    bootstrap: str, kafka_admin: AdminClient, topic_specs: list[TopicSpec], prefix: str
) -> None:
    """An upgrade that declares a new config (runs.state's segment.ms, say) is applied to
    the topics already there, and only the declared keys change."""
    state = f"{prefix}runs.state"
    old = {"cleanup.policy": "compact", "retention.ms": "-1", "max.message.bytes": "2000000"}
    kafka_admin.create_topics(
        [NewTopic(state, num_partitions=6, replication_factor=1, config=old)]
    )[state].result(timeout=30)

    findings = apply(bootstrap, topic_specs, prefix)

    altered = {f.message.split(":")[0] for f in findings if f.topic == state}
    assert {"config segment.ms", "config min.cleanable.dirty.ratio"} <= altered
    drift = verify(bootstrap, topic_specs, prefix)
    assert not has_errors(drift), [f for f in drift if f.level is Level.ERROR]
    configs = describe(kafka_admin, [state])[state].configs
    assert configs["segment.ms"] == "600000"
    assert configs["max.message.bytes"] == "2000000"  # not declared: left as it was

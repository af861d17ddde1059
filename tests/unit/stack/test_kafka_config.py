"""The broker properties of the local KRaft cluster (no JVM needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runcoord.stack.kafka_config import (
    BrokerLayout,
    random_cluster_id,
    replication,
    server_properties,
)


def _cluster(n: int, tmp_path: Path) -> list[BrokerLayout]:
    return [BrokerLayout(i, 9092 + i, 9192 + i, tmp_path / f"broker-{i}") for i in range(n)]


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


@pytest.mark.parametrize(
    ("brokers", "rf", "min_isr"), [(1, "1", "1"), (2, "1", "1"), (3, "3", "2")]
)
def test_internal_topics_fit_the_cluster(
    tmp_path: Path, brokers: int, rf: str, min_isr: str
) -> None:
    cluster = _cluster(brokers, tmp_path)
    props = _props(server_properties(cluster[-1], cluster))
    assert props["transaction.state.log.replication.factor"] == rf
    assert props["transaction.state.log.min.isr"] == min_isr
    assert props["offsets.topic.replication.factor"] == rf
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert replication(brokers) == (int(rf), int(min_isr))


def test_every_broker_is_a_voter_on_its_own_ports(tmp_path: Path) -> None:
    cluster = _cluster(3, tmp_path)
    props = _props(server_properties(cluster[1], cluster))
    assert props["node.id"] == "1"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == (
        "0@127.0.0.1:9192,1@127.0.0.1:9193,2@127.0.0.1:9194"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9093"
    assert props["log.dirs"] == str(tmp_path / "broker-1" / "data")


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {random_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)

"""The broker's server.properties for a local KRaft cluster of N combined broker+controllers.

Pure functions of the layout, so the settings that make transactions work on one node
(replication factor 1 for the internal topics) are tested without starting a JVM.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path

# Controller (KRaft) ports sit this far above the client ports: broker i uses
# kafka_port + i for clients and kafka_port + CONTROLLER_PORT_OFFSET + i for the quorum.
CONTROLLER_PORT_OFFSET = 100
HOST = "127.0.0.1"


@dataclass(frozen=True)
class BrokerLayout:
    index: int
    port: int
    controller_port: int
    home: Path

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        # The JVM's own output: crashes before log4j is up, OOM messages.
        return self.log_dir / "stdout.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def replication(brokers: int) -> tuple[int, int]:
    """(replication factor, min ISR) for internal topics: 1/1 below three brokers, else 3/2.

    With three brokers one may be down (a fault test restarts one) and transactions still
    commit; below three there is no such redundancy to ask for.
    """
    return (3, 2) if brokers >= 3 else (1, 1)


def random_cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 random bytes, unpadded, never leading "-".
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def server_properties(broker: BrokerLayout, cluster: list[BrokerLayout]) -> str:
    rf, min_isr = replication(len(cluster))
    voters = ",".join(f"{b.index}@{HOST}:{b.controller_port}" for b in cluster)
    props = {
        "process.roles": "broker,controller",
        "node.id": broker.index,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{broker.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": broker.data,
        # Internal topics: the defaults (3 replicas) cannot be met by one node, and then
        # init_transactions and group commits wait forever instead of failing.
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        # A broker restarted after kill -9 re-registers only once its previous incarnation's
        # session has expired: 9 s by default, measured 16.8 s to restart a single node vs
        # 6.9 s with these. Loopback and 8 heartbeats per session leave room for GC pauses.
        "broker.session.timeout.ms": 4000,
        "broker.heartbeat.interval.ms": 500,
        # A new group's first member gets its partitions at once, not after 3 s.
        "group.initial.rebalance.delay.ms": 0,
        # Every topic is declared in topics.yaml: a typo must fail, not create a topic with
        # one partition that silently breaks co-partitioning of run-keyed topics.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
    }
    lines = ["# Written by `runcoord stack up` on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"

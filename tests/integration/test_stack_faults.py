"""The fault-test handle on single brokers works: kill -9, restart, healthy again."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcoord.config import Settings
from runcoord.stack import KafkaCluster
from runcoord.stack.kafka_config import CONTROLLER_PORT_OFFSET
from runcoord.stack.kafka_probe import answers_metadata
from runcoord.stack.paths import StackPaths
from runcoord.stack.procs import port_in_use

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _free_base() -> int:
    # Below the kernel's ephemeral range (32768-60999): there, any process's outgoing
    # connection can take the port between this check and the broker's bind.
    for base in range(29092, 29900, 7):
        if not port_in_use(base) and not port_in_use(base + CONTROLLER_PORT_OFFSET):
            return base
    raise AssertionError("no free pair of ports for a second broker")


def test_a_killed_broker_restarts_and_serves_transactions_again(
    tmp_path: Path, settings: Settings
) -> None:
    # A cluster of its own beside the main stack, reusing the main jar cache when there is one.
    libs = StackPaths.of(settings).kafka_libs(settings.kafka_version)
    cluster = KafkaCluster(
        Settings(state_dir=tmp_path, kafka_port=_free_base()),
        brokers=1,
        libs=libs if (libs / ".complete").exists() else None,
    )
    said: list[str] = []
    try:
        cluster.up(timeout=120, say=said.append)
        first = cluster.pid(0)
        assert first is not None

        cluster.kill(0)
        assert cluster.pid(0) is None
        assert answers_metadata(cluster.bootstrap, timeout=1) is not None

        assert cluster.start(0)
        cluster.wait_healthy(timeout=120)
        assert cluster.pid(0) not in (None, first)
        assert not cluster.start(0), "a running broker must not be started twice"
    finally:
        cluster.down(said.append)
    assert cluster.pid(0) is None

"""The coordinator's outer loop: a session that fails for any known reason is rebuilt; and
what it reports of what it owns."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY

from runcoord.coordinator.loop import Coordinator, LoopConfig
from runcoord.coordinator.partitions import PartitionRuns
from runcoord.domain.policy import Policy
from runcoord.errors import Fenced, KafkaRetriable


class Sessions(Coordinator):
    """The real outer loop over sessions that fail as scripted (no broker needed)."""

    def __init__(self, failures: list[Exception], stop: threading.Event) -> None:
        super().__init__(LoopConfig(bootstrap="127.0.0.1:1"), Policy())
        self.failures = failures
        self.sessions = 0
        self._stop = stop

    def _session(self, stop: threading.Event) -> None:
        self.sessions += 1
        if self.failures:
            raise self.failures.pop(0)
        self._stop.set()


@pytest.mark.parametrize(
    "failure",
    [
        # init_transactions right after a broker restart; this one used to kill the replica.
        KafkaRetriable("COORDINATOR_LOAD_IN_PROGRESS: Failed to initialize Producer ID"),
        Fenced("a newer owner exists"),
    ],
)
def test_a_failed_session_is_rebuilt_not_fatal(failure: Exception) -> None:
    stop = threading.Event()
    loop = Sessions([failure], stop)
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and loop.sessions == 2


def test_a_bug_is_not_swallowed() -> None:
    stop = threading.Event()
    loop = Sessions([ZeroDivisionError("a bug")], stop)
    with pytest.raises(ZeroDivisionError):
        loop.run(stop)


def test_the_partitions_gauge_says_how_many_this_replica_owns() -> None:
    loop = Coordinator(LoopConfig(bootstrap="127.0.0.1:1"), Policy())
    loop.owned = {0: PartitionRuns(0), 3: PartitionRuns(3)}
    loop.update_run_gauges()
    assert REGISTRY.get_sample_value("runcoord_partitions_owned") == 2
    loop.owned = {}
    loop.update_run_gauges()
    assert REGISTRY.get_sample_value("runcoord_partitions_owned") == 0

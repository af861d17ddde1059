"""bench/eos_vs_raw.py's at-least-once loop: the transaction's calls mapped to their
at-least-once counterparts, so the loop it is compared with differs in that alone."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from runcoord.coordinator.loop import LoopConfig
from runcoord.domain import Policy
from runcoord.errors import KafkaRetriable


class _Producer:
    def __init__(self, log: list[str], left: int = 0) -> None:
        self.log, self.left = log, left

    def flush(self, timeout: float) -> int:
        self.log.append("flush")
        return self.left


class _Consumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def commit(self, **kwargs: Any) -> None:
        self.log.append(f"commit {kwargs}")


@pytest.fixture
def loop(load_bench: Callable[[str], ModuleType]) -> Any:
    loop = load_bench("eos_vs_raw").AtLeastOnce(LoopConfig(bootstrap="unused:9092"), Policy())
    loop.log = []
    loop._plain = _Producer(loop.log)
    loop._consumer = _Consumer(loop.log)
    return loop


def _never() -> None:
    raise AssertionError("a transactional call went through")


def test_a_batch_flushes_its_records_then_commits_its_offsets(loop: Any) -> None:
    for call in ("begin_transaction", "send_offsets_to_transaction"):
        loop._call(call, _never)
    loop._commit(producer=None)
    assert loop.log == ["flush", "commit {'asynchronous': False}"]


def test_a_batch_without_inputs_commits_nothing(loop: Any) -> None:
    loop._call("begin_transaction", _never)  # timers only: the loop sends no offsets
    loop._commit(producer=None)
    assert loop.log == ["flush"]


def test_records_not_out_keep_the_offsets_back(loop: Any) -> None:
    loop._call("send_offsets_to_transaction", _never)
    loop._plain.left = 3
    with pytest.raises(KafkaRetriable):
        loop._commit(producer=None)
    loop._plain.left = 0
    loop._delivered("broker said no", None)
    with pytest.raises(KafkaRetriable, match="broker said no"):
        loop._commit(producer=None)
    assert loop.log == ["flush", "flush"]
    loop._call("abort_transaction", _never)  # nothing to abort: the loop seeks back


def test_a_call_it_has_no_counterpart_for_stops_it(loop: Any) -> None:
    with pytest.raises(NotImplementedError):
        loop._call("some_new_transactional_call", _never)

"""A client call that never returns ends the session at its deadline instead of blocking it."""

from __future__ import annotations

import threading
import time

import pytest

from runcoord.errors import KafkaFatal
from runcoord.kafka import BoundedCalls, ClientHung


def test_a_call_that_returns_gives_its_value_and_its_error() -> None:
    calls = BoundedCalls("t", deadline_s=5)
    assert calls.run("add", lambda: 1 + 1) == 2
    with pytest.raises(ZeroDivisionError):
        calls.run("divide", lambda: 1 / 0)
    assert calls.hung is None
    calls.close()


def test_a_hung_call_raises_at_its_deadline_and_the_client_is_abandoned() -> None:
    calls = BoundedCalls("t", deadline_s=0.3)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(ClientHung, match="send_offsets_to_transaction did not return"):
        calls.run("send_offsets_to_transaction", release.wait)
    assert 0.3 <= time.monotonic() - started < 3
    assert isinstance(ClientHung("x"), KafkaFatal)  # the loop's rebuild path catches Fatal
    # Nothing else may go to a client that has a call stuck inside it.
    ran = threading.Event()
    with pytest.raises(ClientHung, match="abandoned"):
        calls.run("commit_transaction", ran.set)
    assert calls.hung == "send_offsets_to_transaction"
    release.set()
    calls.close()
    assert not ran.wait(0.5)


def test_the_thread_left_behind_does_not_keep_the_process_alive() -> None:
    calls = BoundedCalls("stuck", deadline_s=0.05)
    with pytest.raises(ClientHung):
        calls.run("block", threading.Event().wait)
    stuck = [t for t in threading.enumerate() if t.name == "stuck"]
    assert stuck and all(t.daemon for t in stuck)

"""Poison inputs on the real broker: well-formed records that used to crash the coordinator.

A crash here is worse than one lost input: the replica that restarts meets the same record
again, so its partition is stuck for good. Each case sends its poison onto runs.inbox and
checks that it ends as a dead letter with the reason (or, for a header that only informs,
is applied without it), that later inputs on the same partition are still applied, and that
the coordinator is still alive.

- ``stack``: a real coordinator process (`runcoord coordinator`), with tracing on so that
  the trace headers of every input are read, and a scripted world.
- ``in_process``: a coordinator in this process, whose ``decide`` the test breaks on purpose
  to prove that an exception of any kind while deciding stays with its one input.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runcoord.codec.wire import to_record
from runcoord.coordinator.loop import Coordinator, LoopConfig
from runcoord.deadletter import DeadLetter
from runcoord.domain import Policy, ToolCall
from runcoord.domain import decide as real_decide
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.kafka import TopicNames
from runcoord.registry import load_registry
from runcoord.topics import Level, TopicSpec
from runcoord.topics import apply as apply_topics
from runcoord.topics import delete as delete_topics
from tests.integration.coordinator.driver import Driver, ScriptedRun, Sent
from tests.integration.coordinator.world import TOOLS, start_coordinator

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    driver: Driver
    process: subprocess.Popen[bytes]
    log: Path
    spans: Path

    def alive(self) -> None:
        assert self.process.poll() is None, (
            f"the coordinator exited ({self.process.returncode}):\n"
            + self.log.read_text(errors="replace")[-4000:]
        )


@pytest.fixture(scope="module")
def stack(
    bootstrap: str, topic_specs: list[TopicSpec], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    errors = [f for f in apply_topics(bootstrap, topic_specs, prefix) if f.level is Level.ERROR]
    assert not errors, f"creating the module's topics: {errors}"
    topics = TopicNames.with_prefix(prefix)
    folder = tmp_path_factory.mktemp("poison")
    log, spans = folder / "coordinator.log", folder / "spans.jsonl"
    process = start_coordinator(
        prefix, "coord-0", log, env_extra={"RUNCOORD_OTEL_EXPORTER": f"file:{spans}"}
    )
    driver = Driver(bootstrap, topics)
    try:
        yield Stack(driver, process, log, spans)
    finally:
        driver.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        delete_topics(bootstrap, list(topics.all()))


def dead_lettered(d: Driver, key: str, sent: Sent, kind: str, reason: str) -> DeadLetter:
    letter = d.letter(key)
    assert (letter.kind, reason in letter.reason) == (kind, True), letter
    assert letter.payload == sent.value, "the dead letter keeps the original bytes"
    assert letter.partition == sent.partition
    assert [x.key for x in d.letters].count(key) == 1, "one dead letter per bad input"
    return letter


def partition_goes_on(d: Driver, partition: int, tag: str) -> None:
    after = d.run_on_partition(partition, f"{tag}-after")
    d.start_runs({after: [["lookup"]]})
    assert d.finish(after) == "completed", "the consumer of that partition kept going"


def test_an_observation_before_the_provider_run_exists_is_dead_lettered(stack: Stack) -> None:
    # The record: it tripped an assert in decide and stopped the partition.
    d = stack.driver
    tag = f"early-observation-{uuid.uuid4().hex[:6]}"
    d.start_runs({tag: [["lookup"]]}, hold_create=True)
    d.held_create(tag)  # the run is accepted; its provider run does not exist yet
    poison = inp.RunObserved(
        tag, 0, "requires_action", "step_0", (ToolCall("call_x", "lookup", "{}"),), None, None, True
    )
    sent = d.inject(poison)
    letter = dead_lettered(d, tag, sent, "rejected", "has no provider run yet")
    assert letter.record_name == "RunObserved"
    # Later inputs on that partition are applied, this run's own among them.
    d.release_create(tag)
    assert d.finish(tag) == "completed"
    assert not d.gaps(), "every journal is 1..n"
    partition_goes_on(d, sent.partition, tag)
    stack.alive()


def test_an_observation_with_an_unknown_status_is_dead_lettered(stack: Stack) -> None:
    d = stack.driver
    tag = f"unknown-status-{uuid.uuid4().hex[:6]}"
    d.start_runs({tag: [["lookup"]]}, hold=True)
    call = d.held_calls(tag, 1)[0]
    d.step_opened(tag, "step_0")
    watch = d.current_watch(tag)  # the current watch: the record is not merely stale
    sent = d.inject(inp.RunObserved(tag, watch, "paused", None, (), None, None, True))
    letter = dead_lettered(d, tag, sent, "rejected", "unknown provider status 'paused'")
    assert letter.record_name == "RunObserved"
    d.answer(call)
    assert d.finish(tag) == "completed"
    partition_goes_on(d, sent.partition, tag)
    stack.alive()


def test_trace_headers_that_are_not_utf8_are_read_as_absent(stack: Stack) -> None:
    # traceparent only informs: the input is applied, in a trace of its own.
    d = stack.driver
    tag = f"bad-traceparent-{uuid.uuid4().hex[:6]}"
    d.runs[tag] = ScriptedRun([], run_id=tag)  # the world's provider answers it
    start = inp.StartRun(tag, "t1", f"th_{tag}", "asst", "assistants", "hello", 0)
    value = d.codec.encode(*to_record(start))
    partition = d.produce(
        d.topics.inbox,
        value,
        tag.encode(),
        headers=[("traceparent", b"\xff\xfe"), ("tracestate", b"\xff")],
    )
    assert d.finish(tag) == "completed"
    assert not [x for x in d.letters if x.key == tag], "applied, not refused"
    spans = [json.loads(line) for line in stack.spans.read_text().splitlines()]
    applied = [
        s
        for s in spans
        if s["name"] == "coordinator apply StartRun" and s["attributes"].get("run_id") == tag
    ]
    assert applied, "the coordinator traced it"
    assert applied[0]["parent_span_id"] is None, "an unreadable context starts a new trace"
    partition_goes_on(d, partition, tag)
    stack.alive()


# --------------------------------------------------------------------------- any exception


@pytest.fixture
def policy() -> Policy:
    return load_registry(TOOLS).policy(watch_timeout_ms=30_000)


@pytest.fixture
def broken_decide(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Any], bool]], None]:
    """Make the coordinator's decide raise for the inputs ``poisoned`` picks (a stand-in
    for any bug: decide itself refuses every bad input it knows of with a reason)."""

    def install(poisoned: Callable[[Any], bool]) -> None:
        def decide(state: Any, message: Any, **kwargs: Any) -> Any:
            if poisoned(message):
                raise RuntimeError(f"boom on {type(message).__name__}")
            return real_decide(state, message, **kwargs)

        monkeypatch.setattr("runcoord.coordinator.loop.decide", decide)

    return install


@contextmanager
def coordinator_thread(
    bootstrap: str, topics: TopicNames, policy: Policy, unique: str
) -> Iterator[threading.Thread]:
    config = LoopConfig(
        bootstrap=bootstrap, topics=topics, group_id=f"coord-{unique}", instance_id="coord-0"
    )
    stop = threading.Event()
    worker = threading.Thread(target=Coordinator(config, policy).run, args=(stop,))
    worker.start()
    try:
        yield worker
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


@pytest.fixture
def in_process(
    bootstrap: str, topics: TopicNames, policy: Policy, unique: str
) -> Iterator[threading.Thread]:
    with coordinator_thread(bootstrap, topics, policy, unique) as worker:
        yield worker


def test_an_exception_while_deciding_dead_letters_that_input_only(
    bootstrap: str,
    topics: TopicNames,
    broken_decide: Callable[[Callable[[Any], bool]], None],
    in_process: threading.Thread,
) -> None:
    broken_decide(lambda m: isinstance(m, inp.CancelRun) and m.reason == "poison")
    d = Driver(bootstrap, topics)
    try:
        tag = f"decide-raises-{uuid.uuid4().hex[:6]}"
        d.start_runs({tag: [["lookup"]]}, hold=True)
        call = d.held_calls(tag, 1)[0]
        d.step_opened(tag, "step_0")
        before = len(d.events_of[tag])
        sent = d.inject(inp.CancelRun(tag, "t1", "poison"))
        letter = dead_lettered(d, tag, sent, "decide_error", "RuntimeError: boom on CancelRun")
        assert letter.record_name == "CancelRun"
        assert "(at test_poison_inputs.py:" in letter.reason, "where it was raised"
        # The run is as it was before the poison: not cancelling, nothing journaled for it.
        assert not [e for e in d.events_of[tag][before:] if isinstance(e, ev.CancelRequested)]
        d.answer(call)
        assert d.finish(tag) == "completed"
        assert not d.gaps(), "every journal is 1..n"
        partition_goes_on(d, sent.partition, tag)
        assert in_process.is_alive(), "the coordinator is still running"
    finally:
        d.close()


def test_an_exception_while_deciding_a_timer_is_dead_lettered_too(
    bootstrap: str,
    topics: TopicNames,
    unique: str,
    broken_decide: Callable[[Callable[[Any], bool]], None],
) -> None:
    # A timer has no record to dead-letter; its letter names the run instead of being lost.
    tag = f"tick-raises-{uuid.uuid4().hex[:6]}"
    fired: list[inp.Tick] = []

    def poisoned(message: Any) -> bool:
        if isinstance(message, inp.Tick) and message.run_id == tag and not fired:
            fired.append(message)  # only the first: its deadline tick
            return True
        return False

    broken_decide(poisoned)
    policy = load_registry(TOOLS).policy(watch_timeout_ms=30_000, step_budget_ms=2_000)
    d = Driver(bootstrap, topics)
    try:
        with coordinator_thread(bootstrap, topics, policy, unique) as worker:
            d.start_runs({tag: [["lookup"]]}, hold=True)
            call = d.held_calls(tag, 1)[0]
            letter = d.letter(tag)  # the step's deadline passes: its timer fires
            assert (letter.kind, letter.record_name) == ("decide_error", "Tick"), letter
            assert "RuntimeError: boom on Tick" in letter.reason
            assert (letter.source_topic, letter.offset, letter.payload) == ("", -1, b"")
            # Nothing of that tick was applied: no deadline output was recorded.
            assert not [
                e
                for e in d.events_of[tag]
                if isinstance(e, ev.ToolOutputRecorded) and e.output.source == "deadline"
            ]
            d.answer(call)
            assert d.finish(tag) == "completed"
            assert not d.gaps(), "every journal is 1..n"
            assert worker.is_alive(), "the coordinator is still running"
    finally:
        d.close()

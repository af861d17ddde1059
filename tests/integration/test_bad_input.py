"""G5 on the real broker: bad input ends in a dead letter or an error output, never a stop.

Every kind of bad input issue 4 lists (and a few more) is sent to a running product. Each
must end in a dead letter on runs.dlq that carries its reason and its original bytes, or in
an explicit error output for its tool call; then a normal run whose records land on the same
partition still completes, which shows that the consumer that met the bad input kept going.

Two small stacks, each started once for this module (every case uses its own run ids):
- ``inbox``: an in-process coordinator and a scripted world; the test answers the tool calls
  of its runs itself, right or wrong, straight onto runs.inbox;
- ``tools``: an in-process coordinator, the scripted provider, a real tool executor
  (``runcoord executor tools``, with tracing on so that it reads every intent's trace
  headers) and a real HTTP tool server that answers badly on purpose.

Kafka headers that are not UTF-8 go to every consumer that reads headers: the tool executor
(the ``kind`` header routes: a dead letter; ``traceparent`` only informs: read as absent) and
the forensics projector (a record it skips with the reason, and goes on). The coordinator's
own reading of ``traceparent`` is in tests/integration/coordinator/test_poison_inputs.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastavro import parse_schema, schemaless_writer

from runcoord.codec.wire import to_record
from runcoord.coordinator.loop import Coordinator, LoopConfig
from runcoord.db import migrate
from runcoord.deadletter import DeadLetter
from runcoord.domain import Policy, ToolCall
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.forensics.projector import ProjectorConfig, projecting
from runcoord.kafka import TopicNames
from runcoord.registry import load_registry
from runcoord.stack.polling import wait_until
from runcoord.topics import Level, TopicSpec
from runcoord.topics import apply as apply_topics
from runcoord.topics import delete as delete_topics
from tests.integration.coordinator.driver import Driver, Sent
from tests.integration.coordinator.world import TOOLS
from tests.integration.processes import Proc, free_port, running

pytestmark = pytest.mark.integration

BAD_TOOLS = Path(__file__).resolve().parents[1] / "fixtures" / "bad_tools.yaml"
TOOL_EXECUTOR = "bad-tools-0"


# --------------------------------------------------------------------------- the stacks


@contextmanager
def topic_set(bootstrap: str, specs: list[TopicSpec]) -> Iterator[TopicNames]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    errors = [f for f in apply_topics(bootstrap, specs, prefix) if f.level is Level.ERROR]
    assert not errors, f"creating the module's topics: {errors}"
    names = TopicNames.with_prefix(prefix)
    try:
        yield names
    finally:
        delete_topics(bootstrap, list(names.all()))


@contextmanager
def coordinator(bootstrap: str, topics: TopicNames, policy: Policy) -> Iterator[Coordinator]:
    prefix = topics.inbox.removesuffix("runs.inbox")
    config = LoopConfig(
        bootstrap=bootstrap, topics=topics, group_id=f"{prefix}coord", instance_id="coord-0"
    )
    loop = Coordinator(config, policy)
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), name="coordinator")
    worker.start()
    try:
        yield loop
    finally:
        stop.set()
        worker.join(30)
        assert not worker.is_alive(), "the coordinator did not stop"


@pytest.fixture(scope="module")
def inbox(bootstrap: str, topic_specs: list[TopicSpec]) -> Iterator[Driver]:
    policy = load_registry(TOOLS).policy(watch_timeout_ms=30_000)
    with topic_set(bootstrap, topic_specs) as topics, coordinator(bootstrap, topics, policy):
        driver = Driver(bootstrap, topics)
        try:
            yield driver
        finally:
            driver.close()


class ToolServer:
    """A real HTTP tool server on a free port; each tool answers one kind of output."""

    BODIES: dict[str, bytes] = {
        "echo": b'{"ok": true}',
        "not_json": b'{"ok": tru',
        "not_utf8": b'{"ok": "caf\xe9"}',  # Latin-1, as a misconfigured tool would send
        "oversize": json.dumps({"ok": True, "blob": "x" * 4096}).encode(),
        "off_schema": b'{"ok": "yes"}',
        "write_t1": b'{"ok": true}',
    }

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (tool, X-Tool-Call-Id)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = self.path.removeprefix("/tools/")
                server.calls.append((name, self.headers.get("X-Tool-Call-Id") or ""))
                body = server.BODIES.get(name)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)

    def calls_for(self, tool_call_id: str) -> list[str]:
        return [tool for tool, call in self.calls if call == tool_call_id]

    @contextmanager
    def serving(self) -> Iterator[ToolServer]:
        thread = threading.Thread(target=self.http.serve_forever, name="tool-server")
        thread.start()
        try:
            yield self
        finally:
            self.http.shutdown()
            self.http.server_close()
            thread.join(10)


@dataclass
class ToolsStack:
    driver: Driver
    server: ToolServer
    executor: Proc


@pytest.fixture(scope="module")
def tools(
    bootstrap: str,
    pg_dsn: str,
    topic_specs: list[TopicSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ToolsStack]:
    migrate(pg_dsn)  # the tool executor's effect ledger
    policy = load_registry(BAD_TOOLS).policy(watch_timeout_ms=30_000)
    log = tmp_path_factory.mktemp("bad-tools") / "tools.log"
    with (
        topic_set(bootstrap, topic_specs) as topics,
        ToolServer().serving() as server,
        coordinator(bootstrap, topics, policy),
    ):
        executor = Proc(
            "tools-exec",
            [
                "executor",
                "tools",
                "--instance-id",
                TOOL_EXECUTOR,
                "--gateway-url",
                server.url,
                "--registry",
                str(BAD_TOOLS),
                "--topic-prefix",
                topics.inbox.removesuffix("runs.inbox"),
            ],
            log,
        )
        executor.env.pop("RUNCOORD_FAULT_AT", None)
        executor.env["RUNCOORD_OTEL_EXPORTER"] = f"file:{log.parent / 'spans.jsonl'}"
        with running(executor):
            driver = Driver(bootstrap, topics, executor_tools=True)
            try:
                yield ToolsStack(driver, server, executor)
            finally:
                driver.close()


# --------------------------------------------------------------------------- helpers


def letter_for(d: Driver, key: str, sent: Sent, kind: str, reason: str) -> DeadLetter:
    """The one dead letter keyed ``key``: of ``kind``, saying ``reason``, with our bytes."""
    letter = d.letter(key)
    assert (letter.kind, reason in letter.reason) == (kind, True), letter
    assert letter.payload == sent.value, "the dead letter keeps the original bytes"
    assert letter.partition == sent.partition
    assert [x.key for x in d.letters].count(key) == 1, "one dead letter per bad input"
    return letter


def output_of(d: Driver, run_id: str, tool_call_id: str) -> str:
    recorded = d.recorded(run_id, tool_call_id)
    assert isinstance(recorded, ev.ToolOutputRecorded)
    return recorded.output.output


def held_run(d: Driver, run_id: str, script: list[list[str]] | None = None) -> Any:
    d.start_runs({run_id: script or [["lookup"]]}, hold=True)
    return d.held_calls(run_id, 1)[0]


# --------------------------------------------------------------------------- inbox cases
# Each case sends its bad input, checks where it ended, and returns where it landed.

InboxCase = Callable[[Driver, str], Sent]
INBOX: dict[str, InboxCase] = {}


def inbox_case(fn: InboxCase) -> InboxCase:
    INBOX[fn.__name__] = fn
    return fn


@inbox_case
def unknown_tool_call_id(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    sent = d.inject(d.result(call, tool_call_id="call_nobody_asked_for"))
    letter = letter_for(d, tag, sent, "rejected", "unknown tool_call_id call_nobody_asked_for")
    assert letter.record_name == "ToolResult"
    d.answer(call)
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def tool_call_id_of_another_run(d: Driver, tag: str) -> Sent:
    mine, theirs = held_run(d, f"{tag}-a"), held_run(d, f"{tag}-b")
    sent = d.inject(d.result(mine, tool_call_id=theirs.tool_call_id))
    letter_for(d, f"{tag}-a", sent, "rejected", f"unknown tool_call_id {theirs.tool_call_id}")
    d.answer(mine)
    d.answer(theirs)
    assert (d.finish(f"{tag}-a"), d.finish(f"{tag}-b")) == ("completed", "completed")
    return sent


@inbox_case
def result_from_another_tenant(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    sent = d.inject(d.result(call, tenant="t2", output='{"stolen":true}'))
    letter_for(d, tag, sent, "rejected", "from another tenant")
    d.answer(call, '{"ok":true}')
    assert d.finish(tag) == "completed"
    assert output_of(d, tag, call.tool_call_id) == '{"ok":true}', "the intruder's was not kept"
    return sent


@inbox_case
def start_of_another_tenants_run(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    sent = d.inject(inp.StartRun(tag, "t2", "th_other", "asst", "assistants", "mine now", 0))
    letter_for(d, tag, sent, "rejected", "belongs to another tenant")
    d.answer(call)
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def result_for_a_finished_step(d: Driver, tag: str) -> Sent:
    first = held_run(d, tag, [["lookup"], ["lookup"]])
    d.answer(first)
    d.step_opened(tag, "step_1")
    sent = d.inject(d.result(first, output='{"late":true}'))
    letter_for(d, tag, sent, "rejected", "step already closed")
    assert "step already closed" in d.ignored(tag), "the journal says why, too"
    d.answer(d.held_calls(tag, 2)[1])
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def result_after_the_run_was_cancelled(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    d.send(inp.CancelRun(tag, "t1", "the user closed the chat"))
    d.producer.flush(10)
    assert d.finish(tag) == "cancelled"
    sent = d.inject(d.result(call))
    letter_for(d, tag, sent, "rejected", "run already cancelled")
    return sent


@inbox_case
def result_after_the_run_expired(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    d.expire(tag)
    assert d.finish(tag) == "expired"
    sent = d.inject(d.result(call))
    letter_for(d, tag, sent, "rejected", "run already expired")
    return sent


@inbox_case
def duplicate_result_with_a_different_payload(d: Driver, tag: str) -> Sent:
    d.start_runs({tag: [["lookup", "lookup"]]}, hold=True)
    first, second = d.held_calls(tag, 2)
    d.answer(first, '{"n":1}')
    d.recorded(tag, first.tool_call_id)
    sent = d.inject(d.result(first, output='{"n":2}'))
    letter_for(d, tag, sent, "rejected", "conflicting duplicate")
    d.answer(second)
    assert d.finish(tag) == "completed"
    assert output_of(d, tag, first.tool_call_id) == '{"n":1}', "the first result stands"
    return sent


@inbox_case
def oversize_result_on_the_inbox(d: Driver, tag: str) -> Sent:
    # Over OpenAI's 512 KiB per output: refused however it reached the inbox.
    call = held_run(d, tag)
    sent = d.inject(d.result(call, output=json.dumps({"blob": "x" * 600_000})))
    letter_for(d, tag, sent, "rejected", "bytes; the limit is 524288")
    error = json.loads(output_of(d, tag, call.tool_call_id))["error"]
    assert error["type"] == "output_too_large", "the model is told, the step does not wait"
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def outputs_too_large_together(d: Driver, tag: str) -> Sent:
    # Each fits OpenAI's limit; together they would not fit the one record that carries
    # the step's submission (this wedged the coordinator once: MSG_SIZE_TOO_LARGE forever).
    d.start_runs({tag: [["lookup", "lookup"]]}, hold=True)
    first, second = d.held_calls(tag, 2)
    d.answer(first, json.dumps({"blob": "x" * 500_000}))
    d.recorded(tag, first.tool_call_id)
    sent = d.inject(d.result(second, output=json.dumps({"blob": "y" * 500_000})))
    letter_for(d, tag, sent, "rejected", "one submission carries at most")
    error = json.loads(output_of(d, tag, second.tool_call_id))["error"]
    assert error["type"] == "output_too_large"
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def oversize_start_near_the_record_limit(d: Driver, tag: str) -> Sent:
    # The command itself fits one Kafka record, but what the coordinator would write for it
    # (its RunAccepted event, the create intent, the snapshot) would not.
    start = inp.StartRun(tag, "t1", f"th_{tag}", "asst", "assistants", "x" * 999_700, 0)
    sent = d.inject(start)
    assert len(sent.value) > 999_700, "as large as one record may be"
    letter = d.letter(tag)
    assert "would be" in letter.reason and "bytes" in letter.reason, letter.reason
    assert letter.payload == sent.value[: len(letter.payload)], "a prefix of the original"
    assert d.finish_or_none(tag) is None and tag not in d.events_of, "no half-made run"
    return sent


@inbox_case
def result_for_an_unknown_run(d: Driver, tag: str) -> Sent:
    sent = d.inject(inp.ToolResult(tag, "t1", "step_0", "call_x", "{}", False, "tool", None))
    letter_for(d, tag, sent, "rejected", f"unknown run {tag}")
    return sent


@inbox_case
def missing_fields_foreign_schema(d: Driver, tag: str) -> Sent:
    # A foreign producer's ToolResult without most of our fields, framed as ours.
    foreign = parse_schema(
        {
            "type": "record",
            "name": "ToolResult",
            "namespace": "runcoord",
            "fields": [
                {"name": "run_id", "type": "string"},
                {"name": "output", "type": "string"},
            ],
        }
    )
    datum = io.BytesIO()
    schemaless_writer(datum, foreign, {"run_id": tag, "output": "{}"})
    call = held_run(d, tag)
    value = d.header_of("ToolResult") + datum.getvalue()
    sent = Sent(d.produce(d.topics.inbox, value, tag.encode()), value)
    letter_for(d, tag, sent, "decode", "ToolResult v1 datum")
    d.answer(call)
    assert d.finish(tag) == "completed", "the run it named is untouched"
    return sent


@inbox_case
def unknown_schema_fingerprint(d: Driver, tag: str) -> Sent:
    good = d.codec.encode(*to_record(inp.CancelRun(tag, "t1", "why")))
    value = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + good[10:]
    sent = Sent(d.produce(d.topics.inbox, value, tag.encode()), value)
    letter_for(d, tag, sent, "decode", "unknown writer schema fingerprint 0123456789abcdef")
    return sent


@inbox_case
def corrupt_avro_bytes(d: Driver, tag: str) -> Sent:
    good = d.codec.encode(*to_record(inp.CancelRun(tag, "t1", "why")))
    value = good.replace(tag.encode(), b"\xff" * len(tag))  # not UTF-8 inside a string
    sent = Sent(d.produce(d.topics.inbox, value, tag.encode()), value)
    letter_for(d, tag, sent, "decode", "corrupt CancelRun v1 datum: UnicodeDecodeError")
    return sent


@inbox_case
def not_avro_at_all(d: Driver, tag: str) -> Sent:
    value = json.dumps({"run_id": tag, "output": "hello"}).encode()
    sent = Sent(d.produce(d.topics.inbox, value, tag.encode()), value)
    letter_for(d, tag, sent, "decode", "unknown marker")
    return sent


@inbox_case
def empty_message(d: Driver, tag: str) -> Sent:
    sent = Sent(d.produce(d.topics.inbox, None, tag.encode()), b"")
    letter_for(d, tag, sent, "decode", "empty message")
    return sent


@inbox_case
def a_journal_event_not_an_input(d: Driver, tag: str) -> Sent:
    event = ev.RunFinished(run_id=tag, seq=9, at_ms=0, status="completed", reason="forged")
    value = d.codec.encode(*to_record(event))
    sent = Sent(d.produce(d.topics.inbox, value, tag.encode()), value)
    letter = letter_for(d, tag, sent, "decode", "RunFinished is not an input")
    assert letter.record_name == "RunFinished"
    return sent


@inbox_case
def keyed_by_another_run(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    sent = d.inject(d.result(call), key=f"{tag}-other")
    letter_for(d, f"{tag}-other", sent, "routing", "key does not match run_id")
    d.answer(call)
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def on_the_wrong_partition(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    wrong = (d.partition_of(tag) + 1) % d.partitions
    sent = d.inject(d.result(call), partition=wrong)
    letter_for(d, tag, sent, "routing", f"misrouted: run {tag} belongs on partition")
    d.answer(call)
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def observation_before_the_provider_run_exists(d: Driver, tag: str) -> Sent:
    # It tripped an assert in decide: the coordinator died, and so did every restart of it.
    d.start_runs({tag: [["lookup"]]}, hold_create=True)
    d.held_create(tag)
    calls = (ToolCall("call_x", "lookup", "{}"),)
    sent = d.inject(inp.RunObserved(tag, 0, "requires_action", "step_0", calls, None, None, True))
    letter_for(d, tag, sent, "rejected", "has no provider run yet")
    d.release_create(tag)
    assert d.finish(tag) == "completed"
    return sent


@inbox_case
def observation_with_an_unknown_status(d: Driver, tag: str) -> Sent:
    call = held_run(d, tag)
    d.step_opened(tag, "step_0")
    watch = d.current_watch(tag)
    sent = d.inject(inp.RunObserved(tag, watch, "paused", None, (), None, None, True))
    letter_for(d, tag, sent, "rejected", "unknown provider status 'paused'")
    d.answer(call)
    assert d.finish(tag) == "completed"
    return sent


@pytest.mark.parametrize("kind", sorted(INBOX))
def test_bad_inbox_input_is_dead_lettered_and_the_coordinator_goes_on(
    inbox: Driver, kind: str
) -> None:
    tag = f"{kind}-{uuid.uuid4().hex[:6]}"
    sent = INBOX[kind](inbox, tag)
    after = inbox.run_on_partition(sent.partition, f"{tag}-after")
    inbox.start_runs({after: [["lookup"]]})
    assert inbox.finish(after) == "completed", "the consumer of that partition kept going"


# --------------------------------------------------------------------------- tool outputs


@pytest.mark.parametrize(
    ("kind", "tool", "error_type", "reason"),
    [
        ("invalid_json", "not_json", "invalid_output", "tool output is not JSON"),
        ("non_utf8", "not_utf8", "invalid_output", "tool output is not UTF-8"),
        ("oversize", "oversize", "output_too_large", "the limit is 256"),
        ("schema_violation", "off_schema", "invalid_output", "does not fit its schema"),
    ],
)
def test_bad_tool_output_becomes_an_error_output_and_a_dead_letter(
    tools: ToolsStack, kind: str, tool: str, error_type: str, reason: str
) -> None:
    d = tools.driver
    run = f"{kind}-{uuid.uuid4().hex[:6]}"
    call = f"call_{run}_0_0"
    d.start_runs({run: [[tool]]})
    output = json.loads(output_of(d, run, call))
    assert output["error"]["type"] == error_type and reason in output["error"]["message"]
    letter = d.letter(run)
    assert (letter.kind, letter.record_name, reason in letter.reason) == (
        "validation",
        "ToolCallIntent",
        True,
    )
    assert TOOL_EXECUTOR in letter.consumer.split("/")
    # Nothing lost: the tool's own bytes are kept for triage (intake's documented policy).
    assert letter.payload == ToolServer.BODIES[tool]
    # The model was told, the run did not stall, and the bad answer was not asked for again.
    assert d.finish(run) == "completed"
    assert tools.server.calls_for(call) == [tool]
    assert_executor_goes_on(tools, d.partition_of(run), run)


@pytest.mark.parametrize(
    ("kind", "tenant", "tool", "error_type"),
    [
        ("tool_not_enabled_for_the_tenant", "t2", "write_t1", "not_enabled"),
        ("unknown_tool", "t1", "no_such_tool", "unknown_tool"),
    ],
)
def test_refused_tool_gets_an_explicit_error_output_and_is_never_called(
    tools: ToolsStack, kind: str, tenant: str, tool: str, error_type: str
) -> None:
    d = tools.driver
    run = f"{kind}-{uuid.uuid4().hex[:6]}"
    call = f"call_{run}_0_0"
    d.start_runs({run: [[tool]]}, tenant=tenant)
    recorded = d.recorded(run, call)
    assert isinstance(recorded, ev.ToolOutputRecorded)
    assert (recorded.output.is_error, recorded.output.source) == (True, "policy")
    error = json.loads(recorded.output.output)["error"]
    assert error["type"] == error_type and tool in error["message"]
    assert d.finish(run) == "completed"
    assert tools.server.calls_for(call) == [], "a refused tool is never called"
    assert_executor_goes_on(tools, d.partition_of(run), run)


def test_corrupt_intent_is_dead_lettered_by_the_tool_executor(tools: ToolsStack) -> None:
    d = tools.driver
    tag = f"corrupt-intent-{uuid.uuid4().hex[:6]}"
    value = b"\xc3\x01" + b"\x00" * 8 + b"garbage"
    partition = d.produce(d.topics.effects, value, tag.encode(), headers=[("kind", b"tool_call")])
    letter = d.letter(tag)
    assert (letter.kind, letter.payload) == ("decode", value)
    assert TOOL_EXECUTOR in letter.consumer.split("/")
    assert "unknown writer schema fingerprint" in letter.reason
    assert_executor_goes_on(tools, partition, tag)


def assert_executor_goes_on(tools: ToolsStack, partition: int, tag: str) -> None:
    d = tools.driver
    after = d.run_on_partition(partition, f"{tag}-after")
    d.start_runs({after: [["echo"]]})
    assert output_of(d, after, f"call_{after}_0_0") == '{"ok":true}'
    assert d.finish(after) == "completed", "the tool executor kept going"
    assert tools.executor.alive(), tools.executor.tail()


# --------------------------------------------------------------------------- headers


def tool_call_intent(tag: str, tool: str = "echo") -> it.ToolCallIntent:
    """A tool call as a coordinator would emit it, for a run no coordinator knows."""
    return it.ToolCallIntent(
        effect_key=f"ek1_{uuid.uuid4().hex}",
        run_id=tag,
        tenant="t1",
        thread_id=f"th_{tag}",
        provider="assistants",
        step_id="step_0",
        tool_call_id=f"call_{tag}",
        tool=tool,
        arguments="{}",
        deadline_ms=int(time.time() * 1000) + 60_000,
    )


def test_an_intent_whose_kind_header_is_not_utf8_is_dead_lettered_not_run(
    tools: ToolsStack,
) -> None:
    d = tools.driver
    tag = f"kind-not-utf8-{uuid.uuid4().hex[:6]}"
    intent = tool_call_intent(tag)
    value = d.codec.encode(*to_record(intent))
    headers = [("kind", b"\xff\xfe"), ("effect_key", intent.effect_key.encode())]
    partition = d.produce(d.topics.effects, value, tag.encode(), headers=headers)
    letter = d.letter(tag)
    assert (letter.kind, letter.payload, letter.partition) == ("routing", value, partition)
    assert "kind header is not UTF-8" in letter.reason, letter.reason
    assert TOOL_EXECUTOR in letter.consumer.split("/")
    assert_executor_goes_on(tools, partition, tag)
    assert tools.server.calls_for(intent.tool_call_id) == [], "an unroutable intent never runs"
    assert [x.key for x in d.letters].count(tag) == 1, "one dead letter per bad record"


def test_an_undecodable_kind_header_of_another_executors_intent_is_left_to_it(
    tools: ToolsStack,
) -> None:
    # Every kind of executor reads every record: the one the intent belongs to refuses it
    # (so there is one dead letter per record, not one per executor). Here that is the
    # provider executor, which this stack does not run: the tool executor writes nothing.
    d = tools.driver
    tag = f"kind-not-utf8-create-{uuid.uuid4().hex[:6]}"
    create = it.CreateRunIntent(
        effect_key=f"ek1_{uuid.uuid4().hex}",
        run_id=tag,
        tenant="t1",
        thread_id=f"th_{tag}",
        provider="assistants",
        assistant_id="asst",
        input="hello",
    )
    value = d.codec.encode(*to_record(create))
    partition = d.produce(d.topics.effects, value, tag.encode(), headers=[("kind", b"\xff")])
    assert_executor_goes_on(tools, partition, tag)  # it read past the record, and lives
    assert tag not in [x.key for x in d.letters]


def test_an_intent_whose_traceparent_is_not_utf8_is_run_in_a_new_trace(
    tools: ToolsStack,
) -> None:
    d = tools.driver
    tag = f"traceparent-not-utf8-{uuid.uuid4().hex[:6]}"
    intent = tool_call_intent(tag)
    value = d.codec.encode(*to_record(intent))
    headers = [
        ("kind", b"tool_call"),
        ("effect_key", intent.effect_key.encode()),
        ("traceparent", b"\xff\xfe"),
        ("tracestate", b"\xff"),
    ]
    partition = d.produce(d.topics.effects, value, tag.encode(), headers=headers)
    # It ran: the tool was called, and its result reached the coordinator, which knows no
    # such run and says so.
    letter = d.letter(tag)
    assert (letter.kind, letter.record_name) == ("rejected", "ToolResult"), letter
    assert f"unknown run {tag}" in letter.reason
    assert tools.server.calls_for(intent.tool_call_id) == ["echo"]
    assert_executor_goes_on(tools, partition, tag)


def test_the_projector_skips_a_record_whose_headers_are_not_utf8_and_goes_on(
    inbox: Driver, bootstrap: str, pg_dsn: str
) -> None:
    migrate(pg_dsn)  # the forensics tables
    d = inbox
    tag = f"projector-{uuid.uuid4().hex[:6]}"
    intent = tool_call_intent(tag)
    value = d.codec.encode(*to_record(intent))
    bad = [("kind", b"\xff\xfe"), ("effect_key", b"\xfe" + intent.effect_key.encode())]
    partition = d.produce(d.topics.effects, value, tag.encode(), headers=bad)
    after = d.run_on_partition(partition, f"{tag}-after")
    config = ProjectorConfig(
        bootstrap, pg_dsn, d.topics, group_id=f"{tag}-projector", batch_wait_s=0.1
    )
    with projecting(config) as projector:
        d.start_runs({after: [["lookup"]]})
        assert d.finish(after) == "completed"

        def indexed() -> str | None:
            assert projector.failure is None, f"the projector died: {projector.failure!r}"
            with psycopg.connect(pg_dsn) as conn:
                rows = conn.execute(
                    "SELECT run_id, kafka_partition, kafka_offset FROM forensics_intents "
                    "WHERE journal = %s AND run_id = ANY(%s)",
                    (d.topics.events, [tag, after]),
                ).fetchall()
            runs = {r[0] for r in rows}
            return None if after in runs else f"indexed so far: {sorted(runs)}"

        wait_until(indexed, timeout=60, what=f"the intents of {after} indexed")
        assert projector.stats.skipped >= 1, "the bad record was skipped, with a log line"
        with psycopg.connect(pg_dsn) as conn:
            bad_rows = conn.execute(
                "SELECT count(*) FROM forensics_intents WHERE journal = %s AND run_id = %s",
                (d.topics.events, tag),
            ).fetchone()
        assert bad_rows == (0,), "never indexed under a mangled kind"

"""runcoord.tracing: the context survives Kafka headers and HTTP; off means no header at all."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from runcoord import tracing
from runcoord.codec import AvroCodec
from runcoord.coordinator.outbox import Outbox
from runcoord.domain import inputs as inp
from runcoord.domain.decide import Decision
from runcoord.domain.intents import ToolCallIntent
from runcoord.effects.runtime import Executor, ExecutorConfig
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def _off_after() -> Iterator[None]:
    yield
    tracing.shutdown()


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    assert tracing.setup("unit", f"file:{path}")
    yield path


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class FakeMessage:
    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def test_inject_then_extract_round_trips_through_kafka_headers(spans: Path) -> None:
    with tracing.span("producer") as parent:
        headers = tracing.inject([("kind", b"tool_call")])
    keys = [k for k, _ in headers]
    assert keys == ["kind", "traceparent"]
    with tracing.consume("consumer", FakeMessage(headers), {"run_id": "r1", "none": None}):
        assert tracing.traceparent() is not None
    produced, consumed = read(spans)
    assert produced["name"] == "producer" and consumed["name"] == "consumer"
    assert (
        consumed["trace_id"] == produced["trace_id"] == f"{parent.get_span_context().trace_id:032x}"
    )
    assert consumed["parent_span_id"] == produced["span_id"]
    assert consumed["kind"] == "CONSUMER"
    assert consumed["attributes"] == {"run_id": "r1"}  # None values are dropped
    assert consumed["service"] == "unit"


def test_a_record_without_a_header_starts_a_new_trace(spans: Path) -> None:
    with tracing.consume("orphan", FakeMessage([("kind", b"x")])):
        pass
    with tracing.consume("no headers at all", FakeMessage(None)):
        pass
    orphan, bare = read(spans)
    assert orphan["parent_span_id"] is None and bare["parent_span_id"] is None
    assert orphan["trace_id"] != bare["trace_id"]


def test_extract_reads_a_stored_traceparent(spans: Path) -> None:
    with tracing.span("continued", parent=tracing.extract({"traceparent": PARENT})):
        pass
    (continued,) = read(spans)
    assert (continued["trace_id"], continued["parent_span_id"]) == (TRACE_ID, "00f067aa0ba902b7")


def test_off_by_default_adds_no_header_and_no_span(tmp_path: Path) -> None:
    assert tracing.setup("unit", "none") is False
    assert tracing.ENABLED is False
    assert tracing.traceparent() is None
    assert tracing.httpx_event_hooks() == {}
    with tracing.span("nothing"):
        headers = tracing.inject([])
    assert headers == []  # the no-op span has no valid context to carry


def test_the_environment_chooses_the_exporter_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNCOORD_OTEL_EXPORTER", f"file:{tmp_path}/spans-{{service}}.jsonl")
    assert tracing.setup("runcoord-gateway") is True
    with tracing.span("call"):
        pass
    (call,) = read(tmp_path / "spans-runcoord-gateway.jsonl")
    assert call["service"] == "runcoord-gateway"
    monkeypatch.delenv("RUNCOORD_OTEL_EXPORTER")
    assert tracing.setup("runcoord-gateway") is False  # the default is none


def test_an_unknown_exporter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected none, otlp, console or file:PATH"):
        tracing.setup("unit", "jaeger")
    assert tracing.ENABLED is False


# -- where the hot paths use it --------------------------------------------------------------


def _intent() -> ToolCallIntent:
    return ToolCallIntent(
        effect_key="ek1",
        run_id="r1",
        tenant="t1",
        thread_id="th1",
        provider="assistants",
        step_id="s1",
        tool_call_id="call_1",
        tool="create_ticket",
        arguments="{}",
        deadline_ms=0,
    )


def test_coordinator_outbox_records_carry_the_trace_only_when_given() -> None:
    decision = Decision(state=None, events=(), intents=(_intent(),))
    off = Outbox(AvroCodec(), TopicNames.with_prefix())
    off.decision(0, decision)
    assert [k for k, _ in off.records[0].headers] == ["kind", "effect_key"]
    on = Outbox(AvroCodec(), TopicNames.with_prefix())
    on.trace = [("traceparent", PARENT.encode())]
    on.decision(0, decision)
    assert on.records[0].headers[-1] == ("traceparent", PARENT.encode())


class CapturingProducer:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        kwargs["on_delivery"](None, None)


def _deliver(producer: CapturingProducer) -> None:
    async def unused(intent: Any) -> list[Any]:
        return []

    executor = Executor(ExecutorConfig("unused:9092", "tools", frozenset({"tool_call"})), unused)
    report = inp.ToolResult("r1", "t1", "s1", "call_1", "ok", False, "tool", "ek1")
    asyncio.run(executor._deliver(producer, [report], threading.Event()))  # type: ignore[arg-type]


def test_executor_reports_carry_the_intent_span_only_when_tracing_is_on(spans: Path) -> None:
    on = CapturingProducer()
    with tracing.consume("tools tool_call", FakeMessage([("traceparent", PARENT.encode())])):
        _deliver(on)
    (span,) = read(spans)
    ((key, value),) = on.calls[0]["headers"]
    assert key == "traceparent"
    assert value.decode().split("-")[1:3] == [span["trace_id"], span["span_id"]]

    tracing.shutdown()
    off = CapturingProducer()
    _deliver(off)
    assert off.calls[0]["headers"] is None


def test_middleware_continues_the_callers_trace_and_names_the_route(spans: Path) -> None:
    app = FastAPI()

    @app.post("/tools/{name}")
    def call(name: str) -> dict[str, str]:
        tracing.annotate(tool=name)
        return {"traceparent": tracing.traceparent() or ""}

    @app.get("/_sim/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    tracing.instrument(app, exclude=("/_sim/",))
    with TestClient(app) as client:
        answer = client.post("/tools/create_ticket", headers={"traceparent": PARENT}).json()
        client.get("/_sim/health")
    (server,) = read(spans)  # the excluded path made none
    assert server["name"] == "POST /tools/{name}"
    assert server["kind"] == "SERVER"
    assert (server["trace_id"], server["parent_span_id"]) == (TRACE_ID, "00f067aa0ba902b7")
    assert server["attributes"]["tool"] == "create_ticket"
    assert server["attributes"]["http.response.status_code"] == 200
    # A sync route runs in a thread pool; the request's span is still the current one there.
    assert answer["traceparent"].split("-")[2] == server["span_id"]


def test_httpx_hooks_put_the_current_context_on_requests(spans: Path) -> None:
    import httpx

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200)

    async def call() -> None:
        transport = httpx.MockTransport(handler)
        hooks = tracing.httpx_event_hooks()
        async with httpx.AsyncClient(transport=transport, event_hooks=hooks) as http:
            with tracing.span("executor"):
                await http.get("http://gateway/tools")

    asyncio.run(call())
    (span,) = read(spans)
    assert seen[0] is not None and seen[0].split("-")[2] == span["span_id"]

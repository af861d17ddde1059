"""A background response's event stream (GET /responses/{id}?stream=true), through the SDK.

Every event the SDK yields is checked against the spec's schema for its type; sequence
numbers are stable, so ``starting_after`` resumes exactly where a dropped stream stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from provider_harness import SpecChecker

from tests.sim_server import LiveServer

# The schema of each event type the simulator sends (spec/extract.py, STREAM_EVENTS).
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.queued": "ResponseQueuedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.failed": "ResponseFailedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
}
ONE_STEP = {"steps": [{"tool_calls": [{"name": "lookup", "arguments": {"id": 7}}]}]}
STEP_TYPES = [
    "response.created",
    "response.queued",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def client(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live.base_url + "/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def start(client: OpenAI, script: dict[str, Any], *, background: bool = True) -> Response:
    return client.responses.create(
        model="gpt-4o",
        background=background,
        input="look it up",
        metadata={"sim_script": json.dumps(script)},
    )


def read(client: OpenAI, response_id: str, after: int | None = None) -> list[ResponseStreamEvent]:
    if after is None:
        return list(client.responses.retrieve(response_id, stream=True))
    return list(client.responses.retrieve(response_id, stream=True, starting_after=after))


def check(spec: SpecChecker, events: list[ResponseStreamEvent]) -> None:
    for event in events:
        # What the server sent, as the SDK parsed it (fields it did not send stay unset).
        sent = event.model_dump(mode="json", exclude_unset=True)
        spec.validate(EVENT_SCHEMAS[event.type], sent)


def test_a_step_streams_from_created_to_completed(client: OpenAI, spec: SpecChecker) -> None:
    response = start(client, {**ONE_STEP, "latency_ms": 150})
    events = read(client, response.id)  # opened while the model works: events come live
    check(spec, events)
    assert [e.type for e in events] == STEP_TYPES
    assert [e.sequence_number for e in events] == list(range(len(STEP_TYPES)))
    created, queued, working, added, done, completed = events
    assert created.type == "response.created" and created.response.status == "queued"
    assert queued.type == "response.queued" and queued.response.status == "queued"
    assert working.type == "response.in_progress" and working.response.status == "in_progress"
    assert working.response.output == []
    assert added.type == "response.output_item.added" and added.item.type == "function_call"
    assert (added.item.status, added.item.arguments) == ("in_progress", "")
    assert done.type == "response.output_item.done" and done.item.type == "function_call"
    assert json.loads(done.item.arguments) == {"id": 7}
    assert completed.type == "response.completed"
    final = client.responses.retrieve(response.id)
    assert completed.response.model_dump() == final.model_dump()


def test_starting_after_replays_only_later_events(client: OpenAI, spec: SpecChecker) -> None:
    response = start(client, ONE_STEP)
    whole = read(client, response.id)
    for after in (0, 2, 4):
        later = read(client, response.id, after)
        check(spec, later)
        assert [e.model_dump() for e in later] == [e.model_dump() for e in whole[after + 1 :]]
    assert read(client, response.id, len(whole) - 1) == []  # done: nothing after the last


@pytest.mark.parametrize(
    ("final", "last"),
    [
        ({"message": "All done."}, "response.completed"),
        ({"status": "incomplete"}, "response.incomplete"),
        ({"status": "failed"}, "response.failed"),
    ],
)
def test_every_way_a_response_ends_has_its_event(
    client: OpenAI, spec: SpecChecker, final: dict[str, Any], last: str
) -> None:
    events = read(client, start(client, {"final": final}).id)
    check(spec, events)
    assert events[-1].type == last
    items = [e for e in events if e.type == "response.output_item.done"]
    assert [e.item.type for e in items] == ([] if last == "response.failed" else ["message"])


def test_a_cancel_ends_the_stream_without_a_terminal_event(client: OpenAI) -> None:
    response = start(client, {**ONE_STEP, "latency_ms": 10_000})
    seen: list[str] = []
    began = time.monotonic()
    with client.responses.retrieve(response.id, stream=True) as stream:
        for event in stream:
            seen.append(event.type)
            if event.type == "response.in_progress":
                client.responses.cancel(response.id)
    # The spec has no response.cancelled event: the stream just ends, long before the model
    # would have finished, and the response says why.
    assert seen == STEP_TYPES[:3]
    assert time.monotonic() - began < 5
    assert client.responses.retrieve(response.id).status == "cancelled"


def test_a_dropped_stream_resumes_after_the_last_event_seen(
    client: OpenAI, live: LiveServer
) -> None:
    response = start(client, ONE_STEP)
    whole = read(client, response.id)
    live.faults({"endpoints": {"retrieve": {"stream_drop_rate": 0.4}}, "seed": 3})
    got: list[ResponseStreamEvent] = []
    drops = mid_way = 0
    for _ in range(50):
        before = len(got)
        after = got[-1].sequence_number if got else None
        try:
            extra = {} if after is None else {"starting_after": after}
            for event in client.responses.retrieve(response.id, stream=True, **extra):
                got.append(event)
        except openai.APIConnectionError:
            drops += 1
            mid_way += len(got) > before  # some events came before the connection broke
            continue
        break
    fired = live.admin.get("/faults").json()["fired"]
    assert mid_way > 0 and fired["retrieve.stream_drop"] == drops
    assert [e.model_dump() for e in got] == [e.model_dump() for e in whole]


def test_the_fault_knobs_apply_before_the_stream_starts(client: OpenAI, live: LiveServer) -> None:
    response = start(client, ONE_STEP)
    live.faults({"endpoints": {"retrieve": {"error_rate": 1, "error_status": 503}}})
    with pytest.raises(openai.InternalServerError):
        read(client, response.id)
    live.faults({"endpoints": {"retrieve": {"spike_rate": 1, "spike_ms": 300}}})
    began = time.monotonic()
    assert len(read(client, response.id)) == len(STEP_TYPES)
    assert time.monotonic() - began >= 0.3


def test_only_background_responses_stream(client: OpenAI) -> None:
    foreground = start(client, ONE_STEP, background=False)
    with pytest.raises(openai.BadRequestError) as refused:
        read(client, foreground.id)
    assert refused.value.param == "stream"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.retrieve(foreground.id, extra_query={"stream": "yes"})
    assert bad.value.param == "stream"


def test_a_bad_starting_after_is_a_bad_request(live: LiveServer, client: OpenAI) -> None:
    response = start(client, ONE_STEP)
    answer = httpx.get(
        f"{live.base_url}/v1/responses/{response.id}?stream=true&starting_after=x",
        headers={"Authorization": "Bearer sk-test"},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "starting_after"


def test_the_records_say_when_a_step_completed_and_its_calls(
    client: OpenAI, live: LiveServer
) -> None:
    response = start(client, ONE_STEP)
    events = read(client, response.id)
    (record,) = live.records()["runs"]
    done = events[-1]
    assert done.type == "response.completed"
    calls = [i.call_id for i in done.response.output if i.type == "function_call"]
    assert record["call_ids"] == calls
    # To the millisecond, unlike the API's whole seconds.
    assert int(record["completed_at"]) == done.response.completed_at
    assert record["created_at"] < record["completed_at"]

"""Reading a Responses event stream: server-sent events from lines, then each event's
sequence number and state. Pure: tables, no server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from runcoord.provider import ResponsesProvider
from runcoord.provider.responses_mapping import StreamEventError, stream_event
from runcoord.provider.sse import ServerSentEvent, read_events

pytestmark = pytest.mark.anyio


async def lines_of(text: str) -> AsyncIterator[str]:
    for line in text.split("\n"):
        yield line


async def events(text: str) -> list[ServerSentEvent]:
    return [event async for event in read_events(lines_of(text))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event: a\ndata: {}\n\n", [ServerSentEvent("a", "{}")]),
        ("data: {}\n\n", [ServerSentEvent(None, "{}")]),
        ("data:x\n\n", [ServerSentEvent(None, "x")]),  # the space after the colon is optional
        ("data: one\ndata: two\n\n", [ServerSentEvent(None, "one\ntwo")]),
        (": a comment\nid: 7\nretry: 10\ndata: x\n\n", [ServerSentEvent(None, "x")]),
        (
            "event: a\ndata: 1\n\nevent: b\ndata: 2\n\n",
            [ServerSentEvent("a", "1"), ServerSentEvent("b", "2")],
        ),
        ("event: a\n\n", []),  # no data: nothing to dispatch
        ("event: a\ndata: 1\n\nevent: b\ndata: 2", [ServerSentEvent("a", "1")]),  # cut off
    ],
)
async def test_server_sent_events(text: str, expected: list[ServerSentEvent]) -> None:
    assert await events(text) == expected


def response(status: str, *output: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": "m",
        "output": list(output),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "metadata": {},
        **fields,
    }


CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "lookup",
    "arguments": "{}",
    "status": "completed",
}
MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
}


def event(kind: str, sequence: int = 3, **fields: Any) -> str:
    return json.dumps({"type": kind, "sequence_number": sequence, **fields})


@pytest.mark.parametrize(
    ("data", "status", "step", "calls", "detail"),
    [
        (event("response.created", response=response("queued")), "queued", None, [], None),
        (
            event("response.in_progress", response=response("in_progress")),
            "in_progress",
            None,
            [],
            None,
        ),
        (
            event("response.completed", response=response("completed", CALL)),
            "requires_action",
            "resp_1",
            ["call_1"],
            None,
        ),
        (
            event("response.completed", response=response("completed", MESSAGE)),
            "completed",
            None,
            [],
            None,
        ),
        (
            event(
                "response.failed",
                response=response("failed", error={"code": "server_error", "message": "boom"}),
            ),
            "failed",
            None,
            [],
            "server_error: boom",
        ),
        (
            event(
                "response.incomplete",
                response=response("incomplete", incomplete_details={"reason": "max_output_tokens"}),
            ),
            "incomplete",
            None,
            [],
            "incomplete: max_output_tokens",
        ),
    ],
)
def test_lifecycle_events_carry_the_state(
    data: str, status: str, step: str | None, calls: list[str], detail: str | None
) -> None:
    sequence, run = stream_event(data)
    assert sequence == 3 and run is not None
    assert (run.provider_run_id, run.status, run.step_id) == ("resp_1", status, step)
    assert [c.id for c in run.tool_calls] == calls
    assert run.detail == detail


def test_other_events_only_move_the_resume_point() -> None:
    assert stream_event(event("response.output_item.added", 4, output_index=0, item=CALL)) == (
        4,
        None,
    )


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        json.dumps({"type": "response.created"}),  # no sequence_number
        event("response.created"),  # no response
        json.dumps({"type": "response.queued", "sequence_number": "1", "response": {}}),
        event("error", code="server_error", message="stream failed"),
        # A finished response whose function call lacks what answers it.
        event("response.completed", response=response("completed", {**CALL, "call_id": None})),
        event("response.completed", response={"status": "completed"}),  # no id
    ],
)
def test_a_broken_event_is_an_error(data: str) -> None:
    with pytest.raises(StreamEventError):
        stream_event(data)


async def follow(*sent: ServerSentEvent) -> Any:
    async def stream() -> AsyncIterator[ServerSentEvent]:
        for each in sent:
            yield each

    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-unused")
    async with client:
        provider = ResponsesProvider(client, tools=[], observe="stream")
        return await provider._follow_events(stream())


async def test_a_follow_reads_only_the_events_that_can_end_a_response() -> None:
    """A follow of a write decodes only the events that can end the response: the working
    ones carry the whole response each, and are skipped by name (undecodable here)."""
    seen = await follow(
        ServerSentEvent("response.in_progress", "{not json"),
        ServerSentEvent("response.output_item.done", "{not json"),
        ServerSentEvent(
            "response.completed", event("response.completed", response=response("completed", CALL))
        ),
    )
    assert (seen.status, [c.id for c in seen.tool_calls]) == ("requires_action", ["call_1"])


async def test_a_follow_decodes_events_that_come_without_a_name() -> None:
    working = event("response.in_progress", response=response("in_progress"))
    done = event("response.completed", response=response("completed", MESSAGE))
    seen = await follow(ServerSentEvent(None, working), ServerSentEvent(None, done))
    assert seen.status == "completed"
    # Unnamed and broken: the follow gives up (the coordinator's watch takes over).
    assert await follow(ServerSentEvent(None, "{not json"), ServerSentEvent(None, done)) is None


async def test_a_follow_reads_the_stream_to_its_end_after_the_final_event() -> None:
    """A body read to its end frees its connection for the next request (one left unread
    is closed, and the next write opens another)."""
    read: list[str] = []

    async def stream() -> AsyncIterator[ServerSentEvent]:
        done = event("response.completed", response=response("completed", MESSAGE))
        for name, data in (("response.completed", done), ("response.trailer", "{}")):
            read.append(name)
            yield ServerSentEvent(name, data)
        read.append("(end)")

    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-unused")
    async with client:
        seen = await ResponsesProvider(client, tools=[], observe="stream")._follow_events(stream())
    assert seen is not None and seen.status == "completed"
    assert read == ["response.completed", "response.trailer", "(end)"]


async def test_a_stream_that_does_not_end_after_the_final_event_is_not_waited_for() -> None:
    async def stream() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(
            "response.completed", event("response.completed", response=response("completed"))
        )
        await asyncio.sleep(3600)
        yield ServerSentEvent("never", "{}")

    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-unused")
    async with client, asyncio.timeout(5):
        seen = await ResponsesProvider(client, tools=[], observe="stream")._follow_events(stream())
    assert seen is not None and seen.status == "completed"

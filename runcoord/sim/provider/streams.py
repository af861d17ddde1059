"""A background response's event stream: ``GET /v1/responses/{id}?stream=true``, and the
answer to ``POST /v1/responses`` with ``stream: true`` (from its first event).

The events are derived from the statuses the response has had (``Response.statuses``), so
a response's stream is the same list on every request and sequence numbers are stable
across reconnects: ``starting_after=N`` replays only the events after N. A stream sends
what has happened, then each event when it happens, and ends after the terminal event.

| status reached | events |
| --- | --- |
| queued (on create) | ``response.created``, ``response.queued`` |
| in_progress | ``response.in_progress`` |
| completed / incomplete | per output item ``response.output_item.added`` and ``.done``, then ``response.completed`` / ``response.incomplete`` |
| failed | ``response.failed`` |
| cancelled | none: the spec has no ``response.cancelled`` event; the stream just ends |
"""  # noqa: E501

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from runcoord.sim.provider.faults import EndpointClass
from runcoord.sim.provider.items import Item
from runcoord.sim.provider.middleware import ConnectionDropped
from runcoord.sim.provider.responses_model import RESPONSE_TERMINAL, Response
from runcoord.sim.provider.state import SimState

Event = dict[str, Any]


def snapshot(response: Response, status: str) -> dict[str, Any]:
    """The response as it was when it had ``status`` (its body is final only once done)."""
    body = response.to_api()
    if status != response.status:
        body.update(
            status=status, output=[], completed_at=None, error=None, incomplete_details=None
        )
        body.pop("usage", None)
    return body


def _in_progress(item: Item) -> Item:
    """An output item as ``response.output_item.added`` shows it: begun, not yet written."""
    if item["type"] == "function_call":
        return {**item, "arguments": "", "status": "in_progress"}
    if item["type"] == "message":
        return {**item, "content": [], "status": "in_progress"}
    return item


def _given(**fields: Any) -> Callable[[], dict[str, Any]]:
    return lambda: fields


def events(response: Response, after: int = -1) -> list[Event]:
    """The response's events so far after sequence number ``after`` (all by default); an
    event's sequence number is its index in the full list. Only those are built."""
    found: list[Event] = []
    sequence = 0

    def add(kind: str, fields: Callable[[], dict[str, Any]]) -> None:
        nonlocal sequence
        if sequence > after:
            found.append({"type": kind, "sequence_number": sequence, **fields()})
        sequence += 1

    def whole(status: str) -> Callable[[], dict[str, Any]]:
        return lambda: {"response": snapshot(response, status)}

    for status in response.statuses:
        if status == "queued":
            add("response.created", whole("queued"))
            add("response.queued", whole("queued"))
        elif status == "in_progress":
            add("response.in_progress", whole("in_progress"))
        elif status in ("completed", "incomplete", "failed"):
            for index, item in enumerate(response.output):
                add(
                    "response.output_item.added",
                    _given(output_index=index, item=_in_progress(item)),
                )
                add("response.output_item.done", _given(output_index=index, item=item))
            add(f"response.{status}", whole(status))
    return found


def frame(name: str, data: dict[str, Any] | str) -> bytes:
    """One server-sent event: its name, and its data as JSON (or as given, for a literal
    such as the Assistants stream's ``[DONE]``)."""
    body = data if isinstance(data, str) else json.dumps(data)
    return f"event: {name}\ndata: {body}\n\n".encode()


def sse(event: Event) -> bytes:
    return frame(event["type"], event)


async def stream(
    sim: SimState, response: Response, after: int | None, endpoint: EndpointClass = "retrieve"
) -> AsyncIterator[bytes]:
    """The events after ``after`` as server-sent events, until the response is done.

    With the ``stream_drop_rate`` fault of the ``endpoint`` rule (``retrieve`` for a
    ``GET``, ``create`` or ``submit`` for the streamed ``POST`` that made the response) the
    connection is closed before an event (the client sees a broken chunked body, as when a
    network path fails mid-stream).
    """
    store = sim.responses
    sent = -1 if after is None else after
    while True:
        store.advance(response)
        for event in events(response, sent):
            if sim.faults.drop_stream(endpoint):
                raise ConnectionDropped("event stream dropped (stream_drop_rate)")
            yield sse(event)
            sent = event["sequence_number"]
        if response.status in RESPONSE_TERMINAL:
            return
        await store.wait_change(response)

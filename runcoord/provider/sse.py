"""Server-sent events from a body's lines, as the WHATWG HTML standard defines the format.

The stream watch reads events itself rather than through the SDK's typed stream: the SDK
validates every event against the union of some sixty event types, which made watching by
the stream cost more CPU than polling. Here an event is only its ``event`` name and its
``data``; the caller decodes what it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str | None
    data: str


async def read_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """One event per blank-line-terminated block that has data; ``data`` lines are joined
    with newlines, comments (``:``) and the ``id`` and ``retry`` fields are ignored. A block
    cut off before its blank line is incomplete, and dropped (as the standard says)."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)

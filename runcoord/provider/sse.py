"""Server-sent events from a body's lines, as the WHATWG HTML standard defines the format.

The stream watch reads events itself rather than through the SDK's typed stream: the SDK
validates every event against the union of some sixty event types, which made watching by
the stream cost more CPU than polling. Here an event is only its ``event`` name and its
``data``; the caller decodes what it needs.
"""

from __future__ import annotations

import asyncio
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


# How long a follow waits for the end of a stream whose news it has (see drain).
DRAIN_S = 0.05


async def drain(events: AsyncIterator[ServerSentEvent], within_s: float = DRAIN_S) -> None:
    """Read what is left of a stream whose news the caller has; never raises.

    A server ends the stream right after a response's (or a run's) final event, and a body
    read to its end frees its connection for the next request: one left unread is closed,
    and the next request opens another (over TLS, a handshake; against the simulated
    provider, one write in seven). A stream that does not end within ``within_s`` is left
    to be closed as before."""
    try:
        async with asyncio.timeout(within_s):
            async for _ in events:
                pass
    except Exception:  # a timeout, or a stream that broke: the news is in already
        return

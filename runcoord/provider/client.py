"""The openai SDK client the executors use: over aiohttp (runcoord/transport.py says why and
how its failures are read), carrying the trace context when tracing is on."""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI, DefaultAioHttpClient

from runcoord import tracing


def open_client(base_url: str, api_key: str, **options: Any) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` on aiohttp; the caller closes it (``async with``)."""
    http = DefaultAioHttpClient(event_hooks=tracing.httpx_event_hooks())
    return AsyncOpenAI(base_url=base_url, api_key=api_key, http_client=http, **options)

"""Whether a failed request left, read through the executors' real clients over aiohttp.

A server that takes the request and closes the connection without a byte of answer is the
case the aiohttp transports name ``ConnectTimeout``; a port nobody listens on is the one case
that truly never left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
import pytest

from runcoord.harness.replay.procs import free_port
from runcoord.provider.client import open_client
from runcoord.provider.errors import Attempt, OutcomeUnknown, ProviderUnavailable, translate
from runcoord.transport import gateway_client, not_sent

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def hangs_up() -> AsyncIterator[str]:
    """The base URL of a server that reads each request whole, then closes the connection."""
    taken = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        taken.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"
    assert taken.is_set(), "no request reached the server"


@pytest.fixture
def nobody() -> str:
    """The base URL of a port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


async def test_a_tool_request_taken_and_hung_up_on_may_have_acted(hangs_up: str) -> None:
    async with gateway_client() as http:
        with pytest.raises(Exception) as caught:
            await http.post(hangs_up + "/tools/create_ticket", json={"title": "t"})
    assert not not_sent(caught.value)


async def test_a_tool_request_to_nobody_never_left(nobody: str) -> None:
    async with gateway_client() as http:
        with pytest.raises(Exception) as caught:
            await http.post(nobody + "/tools/create_ticket", json={"title": "t"})
    assert not_sent(caught.value)


WRITE = Attempt("create_conversation", "conv_1", write=True, effect_key="ek-1")


async def test_a_provider_write_taken_and_hung_up_on_is_an_unknown_outcome(hangs_up: str) -> None:
    async with open_client(hangs_up + "/v1", "sk-test", max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.conversations.create()
    assert isinstance(translate(caught.value, WRITE), OutcomeUnknown)


async def test_a_provider_write_to_nobody_was_not_applied(nobody: str) -> None:
    async with open_client(nobody + "/v1", "sk-test", max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.conversations.create()
    assert isinstance(translate(caught.value, WRITE), ProviderUnavailable)
